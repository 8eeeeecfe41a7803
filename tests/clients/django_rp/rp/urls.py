from django.urls import include, path

from rp import views

urlpatterns = [
    path("", views.home, name="home"),
    path("whoami/", views.whoami, name="whoami"),
    path("login-failed/", views.login_failed, name="login_failed"),
    path("oidc/", include("mozilla_django_oidc.urls")),
]
