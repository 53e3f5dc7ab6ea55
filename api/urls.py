"""/api/v1/: the REST API; /api/schema/: its OpenAPI 3 schema; /api/docs/: Swagger UI."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from api import views

app_name = "api"

router = DefaultRouter()
router.include_root_view = False
router.register("deals", views.DealViewSet, basename="deal")
router.register("offers", views.OfferViewSet, basename="offer")
router.register("rounds", views.NegotiationRoundViewSet, basename="round")
router.register("activities", views.ActivityViewSet, basename="activity")
router.register("closing-documents", views.ClosingDocumentViewSet, basename="closing-document")
router.register("companies", views.CompanyViewSet, basename="company")
router.register("contacts", views.ContactViewSet, basename="contact")
router.register("channels", views.ChannelViewSet, basename="channel")
router.register("lost-reasons", views.LostReasonViewSet, basename="lost-reason")
router.register("marketing-spend", views.MarketingSpendViewSet, basename="marketing-spend")
router.register("users", views.UserViewSet, basename="user")
router.register("targets", views.TargetViewSet, basename="target")
router.register("kpi-snapshots", views.KpiSnapshotViewSet, basename="kpi-snapshot")

v1 = [
    path("", include(router.urls)),
    path("kpi-definitions/", views.KpiDefinitionView.as_view(), name="kpi-definitions"),
    path("reports/funnel/", views.FunnelReportView.as_view(), name="funnel-report"),
    path("imports/deals/", views.ImportDealsView.as_view(), name="import-deals"),
    path("imports/spend/", views.ImportSpendView.as_view(), name="import-spend"),
    path("imports/activities/", views.ImportActivitiesView.as_view(), name="import-activities"),
    path("exports/deals/", views.ExportDealsView.as_view(), name="export-deals"),
    path("auth/token/", views.ObtainTokenView.as_view(), name="token"),
    # Anything else under /api/v1/ (an id that is not a number...) is a JSON 404 too.
    re_path(r"^.*$", views.not_found),
]

urlpatterns = [
    path("v1/", include(v1)),
    path("schema/", SpectacularAPIView.as_view(api_version="1.0.0"), name="schema"),
    path("docs/", views.ApiDocsView.as_view(), name="docs"),
]
