"""The REST API, version 1.

Every row comes through ``visible_to(user)`` (accounts/access.py): another rep's deal,
offer or activity is a 404, as on the web. Every change of a deal goes through
``funnel/domain.py``; its refusals answer 400 with their message and code, a stale
``version`` answers 409 (412 when the client sent ``If-Match``). See api/exceptions.py.
"""

import io

from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import TemplateView
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.filters import OrderingFilter, SearchFilter
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import user_q
from accounts.models import User
from api import filters, serializers
from api.exceptions import PreconditionFailed
from api.permissions import IsManagerOrAdmin, ReadOnlyOrAdmin, ReadOnlyOrManager
from api.schema import IF_MATCH
from api.throttling import AnonThrottle
from funnel import domain, importing
from funnel.models import (
    Activity,
    Channel,
    ClosingDocument,
    Company,
    Contact,
    Deal,
    LostReason,
    MarketingSpend,
    NegotiationRound,
    Offer,
)
from imports import services as import_services
from kpis.definitions import KPIS
from kpis.models import KpiSnapshot, Target
from kpis.periods import Period, today
from kpis.reading import UnknownSlice, composites, is_dirty, kpi_values, resolve_slice


def _etag(deal):
    return f'"{deal.version}"'


def _if_match(request, deal):
    """Check ``If-Match`` against the deal's current version: 412 when it differs.
    Returns whether the header was sent."""
    header = request.headers.get("If-Match")
    if header is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    if "*" not in tags and _etag(deal) not in tags:
        raise PreconditionFailed()
    return True


# Deals --------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List the deals you may see"),
    retrieve=extend_schema(summary="One deal (its ETag is its version)"),
)
class DealViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Deals: a rep sees their own, a manager their teams', an admin all."""

    serializer_class = serializers.DealSerializer
    filterset_class = filters.DealFilter
    filter_backends = [
        *viewsets.GenericViewSet.filter_backends,
        SearchFilter,
        OrderingFilter,
    ]
    search_fields = ["title", "company__name", "external_id"]
    ordering_fields = [
        "id",
        "title",
        "stage",
        "status",
        "entered_lead_at",
        "last_event_at",
        "updated_at",
        "expected_close_date",
        "current_value_base",
    ]
    ordering = ["-entered_lead_at", "-id"]

    def get_queryset(self):
        # One query for a page, whatever its size: every related name the serializer
        # shows is joined here.
        return Deal.objects.visible_to(self.request.user).select_related(
            "company", "owner", "channel", "lost_reason"
        )

    def _deal_response(self, deal, code=status.HTTP_200_OK):
        deal = self.get_queryset().get(pk=deal.pk)
        return Response(
            serializers.DealSerializer(deal, context=self.get_serializer_context()).data,
            status=code,
            headers={"ETag": _etag(deal)},
        )

    def retrieve(self, request, *args, **kwargs):
        deal = self.get_object()
        return Response(self.get_serializer(deal).data, headers={"ETag": _etag(deal)})

    def _input(self, serializer_class, request):
        serializer = serializer_class(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def _change(self, request, change):
        """Run ``change(deal, data)`` on the visible deal with the client's version."""
        deal = self.get_object()
        conditional = _if_match(request, deal)
        try:
            change(deal)
        except domain.StaleDealError as exc:
            if conditional:
                raise PreconditionFailed() from exc
            raise
        return self._deal_response(deal)

    @extend_schema(
        summary="Record a new lead",
        request=serializers.DealCreateSerializer,
        responses={201: serializers.DealSerializer},
    )
    def create(self, request, *args, **kwargs):
        data = self._input(serializers.DealCreateSerializer, request)
        owner = data.pop("owner", None) or request.user
        deal = domain.create_deal(by=request.user, owner=owner, **data)
        return self._deal_response(deal, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Edit a deal's details (domain.update_deal)",
        request=serializers.DealUpdateSerializer,
        responses=serializers.DealSerializer,
        parameters=[IF_MATCH],
    )
    def partial_update(self, request, *args, **kwargs):
        data = self._input(serializers.DealUpdateSerializer, request)
        version = data.pop("version")
        return self._change(
            request,
            lambda deal: domain.update_deal(
                deal, by=request.user, expected_version=version, **data
            ),
        )

    @extend_schema(
        summary="Move forward (skipped stages are stamped with the same moment)",
        request=serializers.MoveSerializer,
        responses=serializers.DealSerializer,
        parameters=[IF_MATCH],
    )
    @action(detail=True, methods=["post"])
    def move(self, request, pk=None, format=None):
        data = self._input(serializers.MoveSerializer, request)
        return self._change(
            request,
            lambda deal: domain.move_forward(
                deal,
                data["stage"],
                by=request.user,
                at=data.get("at"),
                expected_version=data["version"],
            ),
        )

    @extend_schema(
        summary="Mark lost at the current stage",
        request=serializers.LoseSerializer,
        responses=serializers.DealSerializer,
        parameters=[IF_MATCH],
    )
    @action(detail=True, methods=["post"])
    def lose(self, request, pk=None, format=None):
        data = self._input(serializers.LoseSerializer, request)
        return self._change(
            request,
            lambda deal: domain.mark_lost(
                deal,
                data["lost_reason"],
                by=request.user,
                at=data.get("at"),
                note=data.get("note", ""),
                expected_version=data["version"],
            ),
        )

    @extend_schema(
        summary='Disqualify a lead (lost at qualification, "not qualified")',
        request=serializers.DisqualifySerializer,
        responses=serializers.DealSerializer,
        parameters=[IF_MATCH],
    )
    @action(detail=True, methods=["post"])
    def disqualify(self, request, pk=None, format=None):
        data = self._input(serializers.DisqualifySerializer, request)
        return self._change(
            request,
            lambda deal: domain.disqualify(
                deal,
                by=request.user,
                at=data.get("at"),
                note=data.get("note", ""),
                expected_version=data["version"],
            ),
        )

    @extend_schema(
        summary="Reopen a lost deal (managers and admins)",
        request=serializers.VersionSerializer,
        responses=serializers.DealSerializer,
        parameters=[IF_MATCH],
    )
    @action(detail=True, methods=["post"])
    def reopen(self, request, pk=None, format=None):
        data = self._input(serializers.VersionSerializer, request)
        if not request.user.can_reopen:
            # After the lookup: another team's deal is a 404 before it is a 403.
            self.get_object()
            raise PermissionDenied(_("Only a manager or an admin can reopen a deal."))
        return self._change(
            request,
            lambda deal: domain.reopen(
                deal, by=request.user, at=data.get("at"), expected_version=data["version"]
            ),
        )

    @extend_schema(
        summary="Win (the closing document is signed or paid)",
        request=serializers.VersionSerializer,
        responses=serializers.DealSerializer,
        parameters=[IF_MATCH],
    )
    @action(detail=True, methods=["post"])
    def win(self, request, pk=None, format=None):
        data = self._input(serializers.VersionSerializer, request)
        return self._change(
            request,
            lambda deal: domain.win(
                deal, by=request.user, at=data.get("at"), expected_version=data["version"]
            ),
        )

    @extend_schema(
        summary="Record the agreed terms (what lets a deal enter closing)",
        request=serializers.AgreeTermsSerializer,
        responses=serializers.DealSerializer,
        parameters=[IF_MATCH],
    )
    @action(detail=True, methods=["post"], url_path="agree-terms")
    def agree_terms(self, request, pk=None, format=None):
        data = self._input(serializers.AgreeTermsSerializer, request)
        return self._change(
            request,
            lambda deal: domain.agree_terms(
                deal,
                agreed_value=data["agreed_value"],
                discount_pct=data.get("discount_pct"),
                by=request.user,
                at=data.get("at"),
                expected_version=data["version"],
            ),
        )

    @extend_schema(
        summary="Record or correct the pro-forma invoice or contract (closing stage)",
        request=serializers.ClosingDocumentWriteSerializer,
        responses=serializers.DealSerializer,
        parameters=[IF_MATCH],
    )
    @action(detail=True, methods=["post"], url_path="closing-document")
    def closing_document(self, request, pk=None, format=None):
        data = self._input(serializers.ClosingDocumentWriteSerializer, request)
        return self._change(
            request,
            lambda deal: domain.save_closing_document(
                deal,
                document_type=data["document_type"],
                issue_date=data["issue_date"],
                final_value=data["final_value"],
                number=data.get("number", ""),
                by=request.user,
                expected_version=data["version"],
            ),
        )

    @extend_schema(
        summary="The deal's stage history (append-only)",
        responses=serializers.StageHistorySerializer(many=True),
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def history(self, request, pk=None, format=None):
        deal = self.get_object()
        rows = deal.history.select_related("lost_reason").order_by("at", "id")
        return Response(serializers.StageHistorySerializer(rows, many=True).data)


# What stages capture ------------------------------------------------------------------


class _DealChildViewSet(viewsets.GenericViewSet):
    ordering_fields = ["id"]

    def get_queryset(self):
        return self.model.objects.visible_to(self.request.user)

    def _input(self, serializer_class, request):
        serializer = serializer_class(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


class OfferViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _DealChildViewSet):
    """Offer versions of the deals you may see."""

    model = Offer
    serializer_class = serializers.OfferSerializer
    filterset_class = filters.OfferFilter
    ordering = ["deal_id", "version"]

    @extend_schema(
        summary="Start a new offer version (a revision during negotiation)",
        request=serializers.OfferCreateSerializer,
        responses={201: serializers.OfferSerializer},
    )
    def create(self, request, *args, **kwargs):
        data = self._input(serializers.OfferCreateSerializer, request)
        offer = domain.start_offer(
            data["deal"],
            value=data["value"],
            by=request.user,
            prep_started_at=data.get("prep_started_at"),
            notes=data.get("notes", ""),
        )
        return Response(self.get_serializer(offer).data, status=status.HTTP_201_CREATED)

    def _respond(self, request, function):
        data = self._input(serializers.OfferActionSerializer, request)
        offer = self.get_object()
        function(offer, by=request.user, at=data.get("at"), expected_version=data.get("version"))
        offer.refresh_from_db()
        return Response(self.get_serializer(offer).data)

    @extend_schema(summary="Send a draft offer", request=serializers.OfferActionSerializer)
    @action(detail=True, methods=["post"])
    def send(self, request, pk=None, format=None):
        return self._respond(request, domain.send_offer)

    @extend_schema(
        summary="The client accepts a sent offer", request=serializers.OfferActionSerializer
    )
    @action(detail=True, methods=["post"])
    def accept(self, request, pk=None, format=None):
        return self._respond(request, domain.accept_offer)

    @extend_schema(
        summary="The client rejects a sent offer", request=serializers.OfferActionSerializer
    )
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None, format=None):
        return self._respond(request, domain.reject_offer)


class NegotiationRoundViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _DealChildViewSet):
    """Negotiation rounds of the deals you may see."""

    model = NegotiationRound
    serializer_class = serializers.NegotiationRoundSerializer
    filterset_class = filters.RoundFilter
    ordering = ["deal_id", "number"]

    @extend_schema(summary="Log a negotiation round (deal in negotiation)")
    def create(self, request, *args, **kwargs):
        data = self._input(serializers.NegotiationRoundSerializer, request)
        round_ = domain.add_round(
            data["deal"],
            held_at=data["held_at"],
            proposed_value=data["proposed_value"],
            discount_pct=data.get("discount_pct", 0),
            notes=data.get("notes", ""),
            by=request.user,
        )
        return Response(self.get_serializer(round_).data, status=status.HTTP_201_CREATED)


class ActivityViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _DealChildViewSet):
    """Calls, e-mails, meetings and audits of the deals you may see."""

    model = Activity
    serializer_class = serializers.ActivitySerializer
    filterset_class = filters.ActivityFilter
    filter_backends = [*viewsets.GenericViewSet.filter_backends, OrderingFilter]
    ordering_fields = ["id", "held_at"]
    ordering = ["-held_at", "-id"]

    @extend_schema(summary="Log an activity")
    def create(self, request, *args, **kwargs):
        data = self._input(serializers.ActivitySerializer, request)
        activity = domain.log_activity(
            data["deal"],
            kind=data["kind"],
            held_at=data["held_at"],
            outcome=data.get("outcome", ""),
            notes=data.get("notes", ""),
            by=request.user,
        )
        return Response(self.get_serializer(activity).data, status=status.HTTP_201_CREATED)


class ClosingDocumentViewSet(viewsets.ReadOnlyModelViewSet):
    """Pro-forma invoices and contracts of the deals you may see; recorded through
    ``POST /deals/{id}/closing-document/``."""

    serializer_class = serializers.ClosingDocumentSerializer
    filterset_class = None

    def get_queryset(self):
        return ClosingDocument.objects.visible_to(self.request.user).order_by("id")


# Reference data -----------------------------------------------------------------------

_NO_PUT = ["get", "post", "patch", "head", "options"]


class CompanyViewSet(viewsets.ModelViewSet):
    queryset = Company.objects.all()
    serializer_class = serializers.CompanySerializer
    http_method_names = _NO_PUT
    filter_backends = [*viewsets.ModelViewSet.filter_backends, SearchFilter, OrderingFilter]
    filterset_fields = ["industry", "segment"]
    search_fields = ["name", "tax_id"]
    ordering_fields = ["name", "id"]
    ordering = ["name"]


class ContactViewSet(viewsets.ModelViewSet):
    queryset = Contact.objects.all()
    serializer_class = serializers.ContactSerializer
    http_method_names = _NO_PUT
    filterset_class = filters.ContactFilter
    filter_backends = [*viewsets.ModelViewSet.filter_backends, SearchFilter]
    search_fields = ["first_name", "last_name", "email"]
    ordering = ["last_name", "first_name", "id"]


class ChannelViewSet(viewsets.ModelViewSet):
    """Marketing channels: everyone reads, an admin edits."""

    queryset = Channel.objects.order_by("name")
    serializer_class = serializers.ChannelSerializer
    permission_classes = [*viewsets.ModelViewSet.permission_classes, ReadOnlyOrAdmin]
    http_method_names = _NO_PUT


class LostReasonViewSet(viewsets.ModelViewSet):
    """The managed list of lost reasons: everyone reads, an admin edits."""

    queryset = LostReason.objects.order_by("position", "code")
    serializer_class = serializers.LostReasonSerializer
    permission_classes = [*viewsets.ModelViewSet.permission_classes, ReadOnlyOrAdmin]
    http_method_names = _NO_PUT


class MarketingSpendViewSet(viewsets.ModelViewSet):
    """Marketing spend per channel and month (managers and admins)."""

    queryset = MarketingSpend.objects.select_related("channel").order_by("-month", "channel_id")
    serializer_class = serializers.MarketingSpendSerializer
    permission_classes = [*viewsets.ModelViewSet.permission_classes, IsManagerOrAdmin]
    http_method_names = [*_NO_PUT, "delete"]
    filterset_class = filters.SpendFilter


class UserViewSet(viewsets.ReadOnlyModelViewSet):
    """The people you may see: yourself; a manager also their teams; an admin all."""

    serializer_class = serializers.UserSerializer

    def get_queryset(self):
        return User.objects.filter(user_q(self.request.user)).order_by("username")


# KPIs, targets and reports ------------------------------------------------------------


def allowed_slices(user):
    """The KPI slices ``user`` may read, or None for all (admin).

    A rep reads the slice of their own deals (``rep:<id>``); a manager the slices of
    the teams they lead and of each of their people; an admin every slice, including
    the company, channels, segments and industries (which mix everyone's deals)."""
    if user.is_lejek_admin:
        return None
    people = User.objects.filter(user_q(user)).values_list("pk", flat=True)
    keys = [f"rep:{pk}" for pk in people]
    if user.is_manager:
        keys += [f"team:{pk}" for pk in user.managed_teams.values_list("pk", flat=True)]
    return keys


def default_slice(user):
    if user.is_lejek_admin:
        return "company"
    if user.is_manager:
        team = user.managed_teams.order_by("pk").first()
        if team is not None:
            return f"team:{team.pk}"
    return f"rep:{user.pk}"


class TargetViewSet(viewsets.ModelViewSet):
    """Revenue targets: everyone reads those that concern them; a manager sets them for
    the teams they lead and their people; an admin for anyone and the company."""

    serializer_class = serializers.TargetSerializer
    permission_classes = [*viewsets.ModelViewSet.permission_classes, ReadOnlyOrManager]
    http_method_names = [*_NO_PUT, "delete"]
    filterset_class = filters.TargetFilter

    def get_queryset(self):
        return Target.objects.visible_to(self.request.user).order_by("-period_start", "id")

    def perform_create(self, serializer):
        serializer.save(set_by=self.request.user, set_at=timezone.now())

    def perform_update(self, serializer):
        serializer.save(set_by=self.request.user, set_at=timezone.now())


@extend_schema_view(
    list=extend_schema(
        summary="Stored KPI values",
        description="Filter by kpi, grain, period range and slice. A rep reads the "
        "slice of their own deals (rep:<id>), a manager those of the teams they lead and "
        "of their people, an admin every slice. Slices are stored sparsely: a missing "
        "row is the KPI's empty value.",
    )
)
class KpiSnapshotViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = serializers.KpiSnapshotSerializer
    filterset_class = filters.KpiSnapshotFilter
    filter_backends = [*viewsets.ReadOnlyModelViewSet.filter_backends, OrderingFilter]
    ordering_fields = ["period_start", "kpi", "slice", "computed_at"]
    ordering = ["grain", "period_start", "kpi", "slice", "breakdown"]

    def get_queryset(self):
        queryset = KpiSnapshot.objects.all()
        if getattr(self, "swagger_fake_view", False):
            return queryset
        keys = allowed_slices(self.request.user)
        if keys is not None:
            queryset = queryset.filter(slice__in=keys)
        return queryset


class KpiDefinitionView(APIView):
    """Every KPI of the registry (kpis/definitions.py): label, unit, basis, formula."""

    @extend_schema(
        summary="KPI definitions", responses=serializers.KpiDefinitionSerializer(many=True)
    )
    def get(self, request):
        rows = [_definition(kpi) for kpi in KPIS]
        return Response(serializers.KpiDefinitionSerializer(rows, many=True).data)


def _definition(kpi):
    return {
        "code": kpi.code,
        "label": str(kpi.label),
        "stage": kpi.stage.value if kpi.stage else None,
        "unit": kpi.unit,
        "basis": kpi.basis,
        "direction": kpi.direction,
        "formula": str(kpi.formula),
        "slices": list(kpi.slices),
        "breakdowns": list(kpi.breakdowns),
    }


class FunnelReportView(APIView):
    """The funnel and stage report of one period and slice: every KPI with its value,
    numerator and denominator, read from the stored snapshots (kpis/reading.py), never
    aggregated from deals here."""

    @extend_schema(
        summary="Funnel / stage report",
        parameters=[serializers.FunnelReportQuerySerializer],
        responses=serializers.FunnelReportSerializer,
    )
    def get(self, request):
        query = serializers.FunnelReportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        grain = query.validated_data["grain"]
        try:
            period = (
                Period.parse(grain, query.validated_data["period"])
                if query.validated_data.get("period")
                else Period.containing(grain, today())
            )
        except (ValueError, OverflowError) as exc:
            raise ValidationError({"period": [str(exc)]}) from exc
        text = query.validated_data.get("slice") or default_slice(request.user)
        try:
            slice_key = text if _is_slice_key(text) else resolve_slice(text)
        except UnknownSlice as exc:
            raise NotFound(str(exc)) from exc
        keys = allowed_slices(request.user)
        if keys is not None and slice_key not in keys:
            raise NotFound(_("No such slice among those you may see."))
        breakdown = query.validated_data.get("breakdown", "")
        values = kpi_values(grain, period, slice_key, breakdown)
        rows = [{**_definition(kpi), **values[kpi.code]} for kpi in KPIS if kpi.code in values]
        data = {
            "grain": grain,
            "period": period.label,
            "period_start": period.start,
            "period_end": period.end,
            "slice": slice_key,
            "breakdown": breakdown,
            "dirty": is_dirty(period),
            "kpis": rows,
            "composites": composites(values),
        }
        return Response(serializers.FunnelReportSerializer(data).data)


def _is_slice_key(text):
    kind, _sep, value = text.partition(":")
    return kind in ("team", "rep", "channel") and value.isdigit()


# Imports and exports ------------------------------------------------------------------


class _ImportView(APIView):
    permission_classes = [*APIView.permission_classes, IsManagerOrAdmin]
    parser_classes = [MultiPartParser, FormParser]
    kind = None

    def post(self, request):
        form = serializers.ImportRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        upload = form.validated_data["file"]
        result = import_services.run_import(
            self.kind,
            upload,
            user=request.user,
            create_missing=form.validated_data["create_missing"],
            valid_only=form.validated_data["valid_only"],
            dry_run=form.validated_data["dry_run"],
        )
        body = serializers.ImportReportSerializer(
            import_services.result_dict(result, name=upload.name)
        ).data
        code = (
            status.HTTP_422_UNPROCESSABLE_ENTITY
            if result.rejected and not result.dry_run
            else status.HTTP_200_OK
        )
        return Response(body, status=code)


_IMPORT_RESPONSES = {
    200: OpenApiResponse(
        serializers.ImportReportSerializer,
        description="Imported (or, with dry_run, what would be): the report.",
    ),
    422: OpenApiResponse(
        serializers.ImportReportSerializer,
        description="Nothing imported: the report names every bad row by its line, or "
        "says the file could not be read.",
    ),
}


def _import_schema(summary):
    """The schema of an import endpoint's POST: a multipart upload, the report back."""
    return extend_schema_view(
        post=extend_schema(
            summary=summary,
            request={"multipart/form-data": serializers.ImportRequestSerializer},
            responses=_IMPORT_RESPONSES,
        )
    )


@_import_schema("Import deals (CSV)")
class ImportDealsView(_ImportView):
    """Import a deals CSV (the import_deals format), all or nothing unless valid_only;
    rows whose external_id exists are unchanged. Managers import deals of the people
    they lead."""

    kind = "deals"


@_import_schema("Import marketing spend (CSV)")
class ImportSpendView(_ImportView):
    """Import marketing spend (channel, month, amount, currency): one row per channel
    and month, created or updated."""

    kind = "spend"


@_import_schema("Import activities (CSV)")
class ImportActivitiesView(_ImportView):
    """Import calls, e-mails, meetings and audits (deal = the deal's external_id, kind,
    held_at, outcome, notes, by): an activity already recorded (same deal, kind and
    moment) is unchanged. Managers import onto the deals they can see."""

    kind = "activities"


def deals_csv_response(user):
    """The deals ``user`` may see, as a CSV in the import format."""
    out = io.StringIO()
    importing.export_deals(out, Deal.objects.visible_to(user))
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    name = f"lejek-deals-{timezone.localdate():%Y-%m-%d}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


class ExportDealsView(APIView):
    """The deals you may see, in the import format (a lossless round trip)."""

    permission_classes = [*APIView.permission_classes, IsManagerOrAdmin]

    @extend_schema(
        summary="Export deals (CSV)",
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR)},
    )
    def get(self, request):
        return deals_csv_response(request.user)


# Authentication and documentation -----------------------------------------------------


class ObtainTokenView(ObtainAuthToken):
    """Exchange a username and password for an API token (send it as
    ``Authorization: Token <key>``). Throttled like any anonymous request."""

    throttle_classes = [AnonThrottle]


@csrf_exempt
def not_found(request, *args, **kwargs):
    return JsonResponse({"detail": _("Not found."), "code": "not_found"}, status=404)


class ApiDocsView(TemplateView):
    """Swagger UI, served from our own static files (static/vendor/swagger-ui)."""

    template_name = "api/docs.html"
