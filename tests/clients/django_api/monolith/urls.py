from django.urls import path

from monolith import views

urlpatterns = [
    path("", views.home, name="home"),
    path("whoami/", views.WhoAmI.as_view(), name="whoami"),
    path("gateway-whoami/", views.gateway_whoami, name="gateway-whoami"),
]
