"""The monolith's side of bench/users_me_vs_django.sh: stock Django 5.2 + Django REST framework +
djangorestframework-simplejwt, configured as such a monolith runs in production (DEBUG off,
persistent database connections, JSON only), with `GET /users/me` answering what accounts'
`GET /users/me` answers: the caller, authenticated by an RS256 access token (verified by
simplejwt with PyJWT and `cryptography`) and read from SQLite. The script sets the environment:
the database file and the key pair."""

import os
from datetime import timedelta
from pathlib import Path

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "urls"
WSGI_APPLICATION = "wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["BENCH_DJANGO_DATABASE"],
        # Kept open between requests (the default, 0, opens one per request).
        "CONN_MAX_AGE": 600,
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

_keys = Path(os.environ["BENCH_DJANGO_KEYS"])
SIMPLE_JWT = {
    "ALGORITHM": "RS256",
    "SIGNING_KEY": (_keys / "private.pem").read_text(),
    "VERIFYING_KEY": (_keys / "public.pem").read_text(),
    "ISSUER": "http://127.0.0.1:28090",
    "AUDIENCE": "monolith",
    "ACCESS_TOKEN_LIFETIME": timedelta(hours=1),
    "AUTH_HEADER_TYPES": ("Bearer",),
}
