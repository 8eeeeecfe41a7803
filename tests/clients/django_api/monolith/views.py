"""Who Django REST framework thinks the caller is."""

from django.http import HttpResponse, JsonResponse
from rest_framework.response import Response
from rest_framework.views import APIView


def home(request):
    """Answers 200 without a token: the test waits for it before it starts."""
    return HttpResponse("monolith", content_type="text/plain")


class WhoAmI(APIView):
    """GET /whoami/: the Django user the bearer token maps to (IsAuthenticated, by default)."""

    def get(self, request):
        user = request.user
        return Response({"id": user.id, "username": user.username, "email": user.email})


def gateway_whoami(request):
    """GET /gateway-whoami/: plain Django's request.user, as the GatewayIdentity middleware set
    it from the gateway's headers (anonymous without them)."""
    user = request.user
    return JsonResponse({
        "authenticated": user.is_authenticated,
        "id": user.id,
        "username": user.username,
        "scopes": sorted(getattr(request, "auth_scopes", ())),
    })
