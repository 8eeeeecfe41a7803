"""GET /users/me: the caller, as accounts' GET /users/me gives it."""

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView


class UsersMe(APIView):
    def get(self, request):
        user = request.user
        return Response({
            "id": user.id,
            "email": user.email,
            "username": user.username,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "is_active": user.is_active,
            "date_joined": user.date_joined,
        })


urlpatterns = [path("users/me", UsersMe.as_view())]
