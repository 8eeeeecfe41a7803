"""A relying party that signs its users in with the accounts service's OpenID Connect provider,
by mozilla-django-oidc configured through settings alone. tests/clients/test_oidc.py sets the
environment: the registered client's id and secret, the provider's endpoints (read from its
discovery document) and a SQLite file of the test's own."""

import os
import tempfile

SECRET_KEY = "relying-party-under-test-only"  # noqa: S105 - a throwaway test project
DEBUG = os.environ.get("RP_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "mozilla_django_oidc",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "rp.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("RP_DATABASE",
                               os.path.join(tempfile.gettempdir(), "django-rp.sqlite3")),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The provider answers on the same host (127.0.0.1, another port) and cookies ignore ports:
# names of our own keep Django's cookies apart from the provider's.
SESSION_COOKIE_NAME = "rp_sessionid"
CSRF_COOKIE_NAME = "rp_csrftoken"

AUTHENTICATION_BACKENDS = ["mozilla_django_oidc.auth.OIDCAuthenticationBackend"]

OIDC_RP_CLIENT_ID = os.environ.get("OIDC_RP_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = os.environ.get("OIDC_RP_CLIENT_SECRET", "")
OIDC_OP_AUTHORIZATION_ENDPOINT = os.environ.get("OIDC_OP_AUTHORIZATION_ENDPOINT", "")
OIDC_OP_TOKEN_ENDPOINT = os.environ.get("OIDC_OP_TOKEN_ENDPOINT", "")
OIDC_OP_USER_ENDPOINT = os.environ.get("OIDC_OP_USER_ENDPOINT", "")
OIDC_OP_JWKS_ENDPOINT = os.environ.get("OIDC_OP_JWKS_ENDPOINT", "")
# Not a mozilla-django-oidc setting: rp.views.provider_logout_url reads it.
OIDC_OP_LOGOUT_ENDPOINT = os.environ.get("OIDC_OP_LOGOUT_ENDPOINT", "")
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_RP_SCOPES = "openid email profile"
OIDC_TIMEOUT = 10
# RP-initiated logout at the provider when the user signs out here.
OIDC_STORE_ID_TOKEN = True
OIDC_OP_LOGOUT_URL_METHOD = "rp.views.provider_logout_url"
ALLOW_LOGOUT_GET_METHOD = True

LOGIN_REDIRECT_URL = "/whoami/"
LOGIN_REDIRECT_URL_FAILURE = "/login-failed/"
LOGOUT_REDIRECT_URL = "/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "mozilla_django_oidc": {"handlers": ["console"], "level": "DEBUG"},
        "django.request": {"handlers": ["console"], "level": "INFO"},
    },
}
