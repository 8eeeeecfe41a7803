"""Makes the bench user (once) and prints an access token for them, as the monolith's own
login would (simplejwt's AccessToken)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()

from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken

User = get_user_model()
user, created = User.objects.get_or_create(username="bench", defaults={"email": "bench@example.com"})
if created:
    user.set_password("password-123")
    user.save()
print(AccessToken.for_user(user))
