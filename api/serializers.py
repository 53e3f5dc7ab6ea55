"""Serializers of the REST API.

Responses are plain model serializers. Requests that change a deal are separate small
serializers: they only validate the input's shape, and the view hands the validated
data to a function of ``funnel/domain.py``, which decides whether the change is
allowed. Related ids posted in a body are looked up through ``visible_to`` (or the
user's people, ``user_q``), so another team's row is "does not exist", as on a 404.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from accounts.access import user_q
from accounts.models import User
from funnel import domain
from funnel.models import (
    Activity,
    ActivityKind,
    Channel,
    ClosingDocument,
    Company,
    Contact,
    Deal,
    DocumentType,
    LostReason,
    MarketingSpend,
    NegotiationRound,
    Offer,
    StageHistory,
)
from funnel.money import to_base
from funnel.stages import Stage
from kpis.models import KpiSnapshot, Target
from kpis.periods import Grain, start_of

MONEY = {"max_digits": 16, "decimal_places": 2, "min_value": 0}
PERCENT = {"max_digits": 5, "decimal_places": 2, "min_value": 0, "max_value": 100}


def _user(serializer):
    request = serializer.context.get("request")
    return getattr(request, "user", None)


class VisibleDealField(serializers.PrimaryKeyRelatedField):
    """A deal id the requesting user may see; any other id "does not exist"."""

    def __init__(self, **kwargs):
        super().__init__(queryset=Deal.objects.all(), **kwargs)

    def get_queryset(self):
        return Deal.objects.visible_to(_user(self))


class PersonField(serializers.PrimaryKeyRelatedField):
    """A user id among the people the requesting user may see (``user_q``)."""

    def __init__(self, **kwargs):
        super().__init__(queryset=User.objects.all(), **kwargs)

    def get_queryset(self):
        return User.objects.filter(user_q(_user(self)))


def model_errors(exc):
    """A Django ValidationError as DRF's {field: [messages]}."""
    if hasattr(exc, "error_dict"):
        return {
            ("non_field_errors" if name == "__all__" else name): [
                str(m) for error in errors for m in error
            ]
            for name, errors in exc.error_dict.items()
        }
    return {"non_field_errors": [str(m) for m in exc.messages]}


def full_clean(instance, exclude=()):
    """Model validation (fields and constraints) as a DRF validation error."""
    try:
        instance.full_clean(exclude=list(exclude))
    except DjangoValidationError as exc:
        raise serializers.ValidationError(model_errors(exc)) from exc


# People and reference data ------------------------------------------------------------


class UserSerializer(serializers.ModelSerializer):
    name = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["id", "username", "name", "role", "team"]
        read_only_fields = fields

    def get_name(self, user) -> str:
        return str(user)


class CompanySerializer(serializers.ModelSerializer):
    class Meta:
        model = Company
        fields = ["id", "name", "industry", "segment", "tax_id", "website", "churned_at"]


class ContactSerializer(serializers.ModelSerializer):
    class Meta:
        model = Contact
        fields = ["id", "company", "first_name", "last_name", "email", "phone", "position"]


class ChannelSerializer(serializers.ModelSerializer):
    class Meta:
        model = Channel
        fields = ["id", "name", "is_active"]


class LostReasonSerializer(serializers.ModelSerializer):
    label = serializers.CharField(read_only=True)

    class Meta:
        model = LostReason
        fields = ["id", "code", "name_en", "name_pl", "label", "is_active", "position"]


class MarketingSpendSerializer(serializers.ModelSerializer):
    month = serializers.DateField(help_text=_("The first day of the month."))

    class Meta:
        model = MarketingSpend
        fields = ["id", "channel", "month", "amount", "currency", "amount_base"]
        read_only_fields = ["amount_base"]

    def validate_month(self, month):
        if month.day != 1:
            raise serializers.ValidationError(_("Give the first day of the month."))
        return month

    def validate(self, attrs):
        instance = self.instance or MarketingSpend()
        spend = MarketingSpend(
            pk=instance.pk,
            channel=attrs.get("channel", getattr(instance, "channel", None)),
            month=attrs.get("month", instance.month),
            amount=attrs.get("amount", instance.amount),
            currency=attrs.get("currency", instance.currency),
        )
        try:
            # The same conversion as the import: at the rate of the month's first day.
            attrs["amount_base"] = to_base(spend.amount, spend.currency, spend.month)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"currency": exc.messages}) from exc
        spend.amount_base = attrs["amount_base"]
        full_clean(spend)
        return attrs


# Deals --------------------------------------------------------------------------------


class DealSerializer(serializers.ModelSerializer):
    """A deal as the API shows it. ``version`` is what a change must send back."""

    company_name = serializers.CharField(source="company.name", read_only=True)
    owner_username = serializers.CharField(source="owner.username", read_only=True)
    channel_name = serializers.CharField(
        source="channel.name", read_only=True, allow_null=True, default=None
    )
    lost_reason = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)

    class Meta:
        model = Deal
        fields = [
            "id",
            "version",
            "title",
            "company",
            "company_name",
            "contact",
            "channel",
            "channel_name",
            "owner",
            "owner_username",
            "external_id",
            "stage",
            "status",
            "currency",
            "estimated_value",
            "estimated_value_base",
            "current_value_base",
            "first_touch_at",
            "heard_from",
            "contact_prompt",
            "product_scope",
            "industry",
            "segment",
            "qualification_score",
            "problems",
            "desired_outcomes",
            "expected_close_date",
            "agreed_value",
            "agreed_value_base",
            "agreed_at",
            "discount_pct",
            "won_at",
            "lost_at",
            "lost_reason",
            "lost_stage",
            "lost_note",
            "entered_lead_at",
            "entered_qualification_at",
            "entered_needs_at",
            "entered_offer_at",
            "entered_negotiation_at",
            "entered_closing_at",
            "last_event_at",
            "updated_at",
        ]
        read_only_fields = fields


#: What a new deal may carry: the editable details (stage, status and outcomes come
#: from transitions; a discount and a loss note come later), and its external id.
CREATE_FIELDS = [
    *(name for name in domain.EDITABLE_FIELDS if name not in ("discount_pct", "lost_note")),
    "external_id",
]


class DealCreateSerializer(serializers.ModelSerializer):
    """A new lead, recorded now by ``domain.create_deal``. ``owner`` defaults to the
    requesting user; a manager may name a member of their teams."""

    owner = PersonField(required=False)

    class Meta:
        model = Deal
        fields = CREATE_FIELDS


class DealUpdateSerializer(serializers.ModelSerializer):
    """An edit through ``domain.update_deal``: any editable field, and the ``version``
    the client read (a stale one answers 409)."""

    version = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    owner = PersonField(required=False)

    class Meta:
        model = Deal
        fields = ["version", *domain.EDITABLE_FIELDS]
        extra_kwargs = {name: {"required": False} for name in domain.EDITABLE_FIELDS}


class VersionSerializer(serializers.Serializer):
    version = serializers.IntegerField(
        min_value=1,
        max_value=2**31 - 1,
        help_text=_("The deal's version the client saw; a stale one answers 409."),
    )
    at = serializers.DateTimeField(
        required=False,
        help_text=_(
            "When it happened (default now); not in the future nor before the deal's latest event."
        ),
    )


class MoveSerializer(VersionSerializer):
    stage = serializers.ChoiceField(choices=Stage.choices)


class LoseSerializer(VersionSerializer):
    lost_reason = serializers.SlugRelatedField(
        slug_field="code", queryset=LostReason.objects.filter(is_active=True)
    )
    note = serializers.CharField(required=False, allow_blank=True, max_length=5000)


class DisqualifySerializer(VersionSerializer):
    note = serializers.CharField(required=False, allow_blank=True, max_length=5000)


class AgreeTermsSerializer(VersionSerializer):
    agreed_value = serializers.DecimalField(**MONEY)
    discount_pct = serializers.DecimalField(required=False, allow_null=True, **PERCENT)


class ClosingDocumentWriteSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    document_type = serializers.ChoiceField(choices=DocumentType.choices)
    number = serializers.CharField(required=False, allow_blank=True, max_length=60)
    issue_date = serializers.DateField()
    final_value = serializers.DecimalField(**MONEY)


class StageHistorySerializer(serializers.ModelSerializer):
    lost_reason = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)

    class Meta:
        model = StageHistory
        # ``at`` is the business moment; ``entered_at`` when the server wrote the row.
        fields = [
            "id",
            "event",
            "from_stage",
            "to_stage",
            "at",
            "entered_at",
            "by",
            "lost_reason",
            "note",
        ]
        read_only_fields = fields


# What stages capture ------------------------------------------------------------------


class OfferSerializer(serializers.ModelSerializer):
    class Meta:
        model = Offer
        fields = [
            "id",
            "deal",
            "version",
            "value",
            "value_base",
            "prep_started_at",
            "sent_at",
            "responded_at",
            "status",
            "notes",
            "created_by",
            "sent_by",
            "responded_by",
        ]
        read_only_fields = fields


class OfferCreateSerializer(serializers.Serializer):
    """A new offer version (``domain.start_offer``): from the offer stage on; during
    negotiation it is a revision and the deal does not move."""

    deal = VisibleDealField()
    value = serializers.DecimalField(**MONEY)
    prep_started_at = serializers.DateTimeField(required=False)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=5000)


class OfferActionSerializer(serializers.Serializer):
    at = serializers.DateTimeField(required=False)
    version = serializers.IntegerField(
        min_value=1,
        max_value=2**31 - 1,
        required=False,
        help_text=_("Optional: the deal's version the client saw (409 when stale)."),
    )


class NegotiationRoundSerializer(serializers.ModelSerializer):
    deal = VisibleDealField()
    proposed_value = serializers.DecimalField(**MONEY)
    discount_pct = serializers.DecimalField(required=False, **PERCENT)

    class Meta:
        model = NegotiationRound
        fields = [
            "id",
            "deal",
            "number",
            "held_at",
            "proposed_value",
            "proposed_value_base",
            "discount_pct",
            "notes",
            "by",
        ]
        read_only_fields = ["number", "proposed_value_base", "by"]


class ActivitySerializer(serializers.ModelSerializer):
    deal = VisibleDealField()
    kind = serializers.ChoiceField(choices=ActivityKind.choices)

    class Meta:
        model = Activity
        fields = ["id", "deal", "kind", "held_at", "outcome", "notes", "by"]
        read_only_fields = ["by"]


class ClosingDocumentSerializer(serializers.ModelSerializer):
    class Meta:
        model = ClosingDocument
        fields = [
            "id",
            "deal",
            "document_type",
            "number",
            "issue_date",
            "final_value",
            "final_value_base",
            "signed_at",
            "paid_at",
        ]
        read_only_fields = fields


# KPIs and targets ---------------------------------------------------------------------


class TargetSerializer(serializers.ModelSerializer):
    """A revenue target of a rep, a team, or (no team, no rep) the company. A manager
    sets targets for the teams they lead and their members; only an admin sets the
    company's."""

    rep = PersonField(required=False, allow_null=True)

    class Meta:
        model = Target
        fields = ["id", "grain", "period_start", "team", "rep", "amount", "set_by", "set_at"]
        read_only_fields = ["set_by", "set_at"]

    def validate(self, attrs):
        user = _user(self)
        instance = self.instance
        grain = attrs.get("grain", getattr(instance, "grain", Grain.MONTH))
        period_start = attrs.get("period_start", getattr(instance, "period_start", None))
        team = attrs.get("team", getattr(instance, "team", None))
        rep = attrs.get("rep", getattr(instance, "rep", None))
        if period_start is not None and start_of(grain, period_start) != period_start:
            raise serializers.ValidationError(
                {"period_start": [_("Give the first day of the period.")]}
            )
        if not user.is_lejek_admin:
            if team is None and rep is None:
                raise serializers.ValidationError(
                    {
                        "team": [
                            _("Only an admin sets the company's target: choose a team or a rep.")
                        ]
                    }
                )
            if team is not None and team.manager_id != user.pk:
                raise serializers.ValidationError({"team": [_("You do not lead this team.")]})
        target = Target(
            pk=getattr(instance, "pk", None),
            grain=grain,
            period_start=period_start,
            team=team,
            rep=rep,
            amount=attrs.get("amount", getattr(instance, "amount", None)),
        )
        full_clean(target, exclude=["set_by"])
        return attrs


class KpiSnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = KpiSnapshot
        fields = [
            "id",
            "kpi",
            "grain",
            "period_start",
            "slice",
            "breakdown",
            "value",
            "numerator",
            "denominator",
            "extra",
            "computed_at",
        ]
        read_only_fields = fields


class KpiDefinitionSerializer(serializers.Serializer):
    code = serializers.CharField()
    label = serializers.CharField()
    stage = serializers.CharField(allow_null=True)
    unit = serializers.CharField()
    basis = serializers.CharField()
    direction = serializers.IntegerField()
    formula = serializers.CharField()
    slices = serializers.ListField(child=serializers.CharField())
    breakdowns = serializers.ListField(child=serializers.CharField())


class KpiValueSerializer(KpiDefinitionSerializer):
    slices = None
    breakdowns = None
    value = serializers.DecimalField(max_digits=28, decimal_places=8, allow_null=True)
    numerator = serializers.DecimalField(max_digits=28, decimal_places=8, allow_null=True)
    denominator = serializers.DecimalField(max_digits=28, decimal_places=8, allow_null=True)
    extra = serializers.JSONField()
    immature = serializers.BooleanField()


class FunnelReportSerializer(serializers.Serializer):
    grain = serializers.CharField()
    period = serializers.CharField()
    period_start = serializers.DateField()
    period_end = serializers.DateField(help_text=_("The first day after the period."))
    slice = serializers.CharField()
    breakdown = serializers.CharField(allow_blank=True)
    dirty = serializers.BooleanField(
        help_text=_("Some of the period's days await a recompute: values may lag.")
    )
    kpis = KpiValueSerializer(many=True)
    composites = serializers.DictField(
        child=serializers.DictField(
            child=serializers.DecimalField(max_digits=28, decimal_places=8, allow_null=True)
        )
    )


class FunnelReportQuerySerializer(serializers.Serializer):
    grain = serializers.ChoiceField(choices=Grain.choices, default=Grain.MONTH)
    period = serializers.CharField(
        required=False,
        max_length=20,
        help_text=_("2025-03 (month), 2025-Q1, 2025-W11, 2025, or a day; default: today's."),
    )
    slice = serializers.CharField(
        required=False,
        max_length=140,
        help_text=_(
            "company, team:<name or id>, rep:<username or id>, channel:<name or id>, "
            "segment:<value>, industry:<value>; default: your own (rep), your team "
            "(manager), the company (admin)."
        ),
    )
    breakdown = serializers.CharField(required=False, allow_blank=True, max_length=140)


# Imports ------------------------------------------------------------------------------


class ImportRequestSerializer(serializers.Serializer):
    file = serializers.FileField(help_text=_("A UTF-8 CSV file with a header row."))
    dry_run = serializers.BooleanField(
        default=False, help_text=_("Validate and report, write nothing.")
    )
    create_missing = serializers.BooleanField(
        default=False,
        help_text=_(
            "Create unknown channels and lost reasons (and, for an admin, owners) instead "
            "of reporting their rows; unknown companies are always created."
        ),
    )
    valid_only = serializers.BooleanField(
        default=False,
        help_text=_("Import the valid rows and report the others (default: all or nothing)."),
    )


class ImportErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    message = serializers.CharField()


class ImportRowSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    outcome = serializers.ChoiceField(choices=["created", "updated", "unchanged", "failed"])
    cells = serializers.DictField(child=serializers.CharField(allow_blank=True), allow_null=True)


class ImportReportSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["deals", "spend", "activities"])
    dry_run = serializers.BooleanField()
    valid_only = serializers.BooleanField()
    rejected = serializers.BooleanField(
        help_text=_("Nothing was (or would be) written: a row failed, or the file is unreadable.")
    )
    written = serializers.BooleanField()
    valid = serializers.IntegerField()
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    failed = serializers.IntegerField()
    errors = ImportErrorSerializer(many=True)
    created_owners = serializers.ListField(child=serializers.CharField())
    created_companies = serializers.ListField(child=serializers.CharField())
    created_channels = serializers.ListField(child=serializers.CharField())
    created_reasons = serializers.ListField(child=serializers.CharField())
    first_day = serializers.DateField(allow_null=True)
    last_day = serializers.DateField(allow_null=True)
    rows = ImportRowSerializer(many=True)
    report = serializers.ListField(child=serializers.CharField())
