from django.urls import path

from reports import views

app_name = "reports"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("stage/<str:stage>/", views.stage_report, name="stage"),
    path("company/", views.company, name="company"),
    path("deals/", views.deals, name="deals"),
    path("targets/", views.targets, name="targets"),
    path("targets/<int:pk>/delete/", views.target_delete, name="target_delete"),
    path("recompute/", views.recompute, name="recompute"),
    path("status/", views.status, name="status"),
]
