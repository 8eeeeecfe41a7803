"""A Django monolith whose users were moved to the accounts service: stock Django REST framework
with djangorestframework-simplejwt, configured through settings alone to accept the access
tokens accounts issues (RS256, keys from its JWKS) and to map them to its own users by the
`legacy_user_id` claim, which is the Django primary key the import kept.
tests/clients/test_simplejwt.py sets the environment: the issuer, the audience and a SQLite
file of the test's own."""

import os
import tempfile

SECRET_KEY = "monolith-under-test-only"  # noqa: S105 - a throwaway test project
DEBUG = os.environ.get("MONOLITH_DEBUG", "0") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "rest_framework",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The README's ten lines: the identity the gateway verified becomes request.user
    # (tests/clients/test_simplejwt.py, behind a gateway with `auth = "required"`).
    "monolith.gateway_identity.GatewayIdentity",
]
ROOT_URLCONF = "monolith.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("MONOLITH_DATABASE",
                               os.path.join(tempfile.gettempdir(), "django-monolith.sqlite3")),
    }
}
USE_TZ = True

# Every hasher whose hashes accounts imports, so that check_password verifies them all (Django
# only uses hashers listed here); PBKDF2 first, so make_password's default stays Django's.
# Argon2 needs argon2-cffi and the bcrypt ones bcrypt (tests/clients/requirements.txt).
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.BCryptPasswordHasher",
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

# The accounts service's issuer, e.g. http://127.0.0.1:8080/accounts (through the gateway).
ISSUER = os.environ.get("MONOLITH_ISSUER", "http://127.0.0.1:8080/accounts")

SIMPLE_JWT = {
    "ALGORITHM": "RS256",
    # Verification only: accounts signs, its JWKS names the keys (by kid).
    "SIGNING_KEY": None,
    "VERIFYING_KEY": None,
    "JWK_URL": f"{ISSUER}/.well-known/jwks.json",
    "ISSUER": ISSUER,
    "AUDIENCE": os.environ.get("MONOLITH_AUDIENCE", "payments"),
    "LEEWAY": 5,
    "AUTH_HEADER_TYPES": ("Bearer",),
    # Tokens name the Django user by the claim the import kept; users that never were Django's
    # have no such claim and are refused.
    "USER_ID_CLAIM": "legacy_user_id",
    "USER_ID_FIELD": "id",
    # accounts' access tokens say what they are in their header (typ at+jwt), not in a
    # `token_type` claim: None turns simplejwt's claim check off. Every token has a jti.
    "TOKEN_TYPE_CLAIM": None,
    "JTI_CLAIM": "jti",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["console"], "level": "INFO"},
        "rest_framework_simplejwt": {"handlers": ["console"], "level": "DEBUG"},
    },
}
