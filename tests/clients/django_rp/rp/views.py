"""Pages that say who Django thinks is signed in."""

from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpResponse
from django.utils.html import escape


def page(title, body, status=200):
    return HttpResponse(
        f'<!doctype html><html lang="en"><title>{title}</title><link rel="icon" href="data:,">'
        f"<main>{body}</main></html>",
        status=status,
    )


def signed_in_as(request):
    if request.user.is_authenticated:
        return f'<p>Signed in as <span id="email">{escape(request.user.email)}</span></p>'
    return '<p id="anonymous">Not signed in</p>'


def home(request):
    return page("Relying party", signed_in_as(request))


def whoami(request):
    if not request.user.is_authenticated:
        return page("Who am I", signed_in_as(request), status=401)
    return page("Who am I", signed_in_as(request))


def login_failed(request):
    return page("Sign-in failed", '<p id="failed">Sign-in failed</p>', status=403)


def provider_logout_url(request):
    """OIDC_OP_LOGOUT_URL_METHOD: RP-initiated logout at the provider, back to our home page."""
    query = urlencode({
        "id_token_hint": request.session.get("oidc_id_token", ""),
        "post_logout_redirect_uri": request.build_absolute_uri("/"),
        "state": "django-logout",
    })
    return f"{settings.OIDC_OP_LOGOUT_ENDPOINT}?{query}"
