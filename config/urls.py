from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from config import health
from funnel import views as funnel_views

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/password/",
        auth_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "accounts/password/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/", include("api.urls")),
    path("reports/", include("reports.urls")),
    path("import/", include("imports.urls")),
    path("deals/", include("funnel.urls")),
    path("", funnel_views.home, name="home"),
]
