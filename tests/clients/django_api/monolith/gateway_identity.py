"""The README's middleware, as a monolith behind the gateway would use it: the caller the
gateway verified at the edge (its X-Auth-* headers) becomes `request.user`."""

from django.contrib.auth import get_user_model


class GatewayIdentity:
    """The caller the gateway verified; the app must be reachable only through it."""
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        legacy_id = request.headers.get("X-Auth-Legacy-User-Id")
        if legacy_id:
            user = get_user_model().objects.filter(pk=legacy_id, is_active=True).first()
            if user is not None:
                request.user = user
        request.auth_scopes = set(request.headers.get("X-Auth-Scopes", "").split())
        return self.get_response(request)
