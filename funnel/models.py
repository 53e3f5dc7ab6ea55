"""The funnel's data: companies, contacts, channels, spend, deals and what each stage
captures. Deals change only through the domain functions in ``funnel/domain.py``."""

import datetime
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from accounts.access import deal_owner_q
from funnel import stages
from funnel.money import base_currency, currency_validator
from funnel.stages import Stage, Status

MONEY = {"max_digits": 16, "decimal_places": 2}
NON_NEGATIVE = [MinValueValidator(Decimal("0"))]
PERCENT = [MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))]


def recorded_by(verbose_name, related_name="+"):
    """The user who recorded a row or one step of it. Deleting the user keeps the row
    and empties this field."""
    return models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=verbose_name,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name=related_name,
    )


def money_field(verbose_name, **kwargs):
    return models.DecimalField(verbose_name, validators=NON_NEGATIVE, **MONEY, **kwargs)


def percent_field(verbose_name, **kwargs):
    return models.DecimalField(
        verbose_name, max_digits=5, decimal_places=2, validators=PERCENT, **kwargs
    )


def currency_field():
    return models.CharField(
        _("currency"), max_length=3, default=base_currency, validators=[currency_validator]
    )


class ExchangeRate(models.Model):
    """Base-currency units per one unit of ``currency``, valid from ``date``."""

    currency = models.CharField(_("currency"), max_length=3, validators=[currency_validator])
    date = models.DateField(_("date"))
    rate = models.DecimalField(_("rate"), max_digits=18, decimal_places=8)

    class Meta:
        ordering = ["currency", "-date"]
        verbose_name = _("exchange rate")
        verbose_name_plural = _("exchange rates")
        constraints = [
            models.UniqueConstraint(fields=["currency", "date"], name="rate_unique_per_day"),
            models.CheckConstraint(condition=Q(rate__gt=0), name="rate_positive"),
        ]

    def __str__(self):
        return f"{self.currency} {self.date}: {self.rate}"


class Company(models.Model):
    name = models.CharField(_("name"), max_length=200, unique=True)
    industry = models.CharField(_("industry"), max_length=100, blank=True)
    segment = models.CharField(_("segment"), max_length=100, blank=True)
    tax_id = models.CharField(_("tax ID"), max_length=32, blank=True)
    website = models.URLField(_("website"), blank=True)
    churned_at = models.DateField(
        _("churned on"),
        null=True,
        blank=True,
        help_text=_("Set when the customer is known to have left; it stops counting as active."),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = _("company")
        verbose_name_plural = _("companies")

    def __str__(self):
        return self.name


class Contact(models.Model):
    company = models.ForeignKey(
        Company, verbose_name=_("company"), on_delete=models.CASCADE, related_name="contacts"
    )
    first_name = models.CharField(_("first name"), max_length=100, blank=True)
    last_name = models.CharField(_("last name"), max_length=100)
    email = models.EmailField(_("e-mail"), blank=True)
    phone = models.CharField(_("phone"), max_length=40, blank=True)
    position = models.CharField(_("position"), max_length=100, blank=True)

    class Meta:
        ordering = ["last_name", "first_name"]
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")

    def __str__(self):
        return f"{self.first_name} {self.last_name}".strip()


class Channel(models.Model):
    """A marketing channel: where leads come from, and what spend is booked against."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    is_active = models.BooleanField(_("active"), default=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("channel")
        verbose_name_plural = _("channels")

    def __str__(self):
        return self.name


class MarketingSpend(models.Model):
    """Marketing spend of one channel in one calendar month (``month`` is its first day)."""

    channel = models.ForeignKey(
        Channel, verbose_name=_("channel"), on_delete=models.PROTECT, related_name="spend"
    )
    month = models.DateField(_("month"))
    amount = money_field(_("amount"))
    currency = currency_field()
    amount_base = models.DecimalField(_("amount in base currency"), **MONEY)

    class Meta:
        ordering = ["-month", "channel__name"]
        verbose_name = _("marketing spend")
        verbose_name_plural = _("marketing spend")
        constraints = [
            models.UniqueConstraint(fields=["channel", "month"], name="spend_unique_per_month"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="spend_non_negative"),
            models.CheckConstraint(condition=Q(month__day=1), name="spend_month_first_day"),
        ]

    def __str__(self):
        return f"{self.channel} {self.month:%Y-%m}: {self.amount} {self.currency}"


class SalesCost(models.Model):
    """Sales cost (salaries, tools, commissions) of one month, optionally of one team."""

    month = models.DateField(_("month"))
    team = models.ForeignKey(
        "accounts.Team",
        verbose_name=_("team"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="sales_costs",
    )
    amount = money_field(_("amount"))
    currency = currency_field()
    amount_base = models.DecimalField(_("amount in base currency"), **MONEY)
    note = models.CharField(_("note"), max_length=200, blank=True)

    class Meta:
        ordering = ["-month"]
        verbose_name = _("sales cost")
        verbose_name_plural = _("sales costs")
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="sales_cost_non_negative"),
            models.CheckConstraint(condition=Q(month__day=1), name="sales_cost_month_first_day"),
        ]

    def __str__(self):
        return f"{self.month:%Y-%m} {self.team or _('company')}: {self.amount} {self.currency}"


class LostReason(models.Model):
    """The managed list of reasons a deal is lost (seeded by a data migration)."""

    NOT_QUALIFIED = "not_qualified"

    code = models.SlugField(_("code"), max_length=40, unique=True)
    name_en = models.CharField(_("name (English)"), max_length=100)
    name_pl = models.CharField(_("name (Polish)"), max_length=100)
    is_active = models.BooleanField(_("active"), default=True)
    position = models.PositiveSmallIntegerField(_("position"), default=0)

    class Meta:
        ordering = ["position", "code"]
        verbose_name = _("lost reason")
        verbose_name_plural = _("lost reasons")

    def __str__(self):
        return self.label

    @property
    def label(self):
        return self.name_pl if (get_language() or "").startswith("pl") else self.name_en


class DealQuerySet(models.QuerySet):
    def visible_to(self, user):
        return self.filter(deal_owner_q(user))

    def open(self):
        return self.filter(status=Status.OPEN)

    def won(self):
        return self.filter(status=Status.WON)

    def lost(self):
        return self.filter(status=Status.LOST)

    def in_stage(self, *stage_codes):
        return self.filter(stage__in=stage_codes)

    def opportunities(self):
        """Deals that entered ``needs``: qualified leads."""
        return self.filter(**{f"{stages.stamp_field(stages.OPPORTUNITY_STAGE)}__isnull": False})


def _stamp_constraints():
    """Stage stamps are contiguous and in stage order: a stamp is set only when the one
    before it is, and never earlier than it; the current stage is stamped, the next not."""
    checks = []
    for prev, cur in zip(stages.STAMP_FIELDS, stages.STAMP_FIELDS[1:], strict=False):
        checks.append(
            models.CheckConstraint(
                condition=Q(**{f"{cur}__isnull": True})
                | Q(**{f"{prev}__isnull": False, f"{cur}__gte": F(prev)}),
                name=f"deal_{cur}_in_order",
            )
        )
    current = Q()
    for stage in stages.ORDER:
        q = Q(stage=stage, **{f"{stages.stamp_field(stage)}__isnull": False})
        nxt = stages.following(stage)
        if nxt:
            q &= Q(**{f"{stages.stamp_field(nxt)}__isnull": True})
        current |= q
    checks.append(models.CheckConstraint(condition=current, name="deal_stage_matches_stamps"))
    return checks


class Deal(models.Model):
    title = models.CharField(_("title"), max_length=200)
    company = models.ForeignKey(
        Company, verbose_name=_("company"), on_delete=models.PROTECT, related_name="deals"
    )
    contact = models.ForeignKey(
        Contact,
        verbose_name=_("contact"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="deals",
    )
    channel = models.ForeignKey(
        Channel,
        verbose_name=_("channel"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="deals",
        help_text=_("The marketing source the lead came from."),
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        on_delete=models.PROTECT,
        related_name="deals",
    )
    external_id = models.CharField(
        _("external ID"),
        max_length=100,
        null=True,
        blank=True,
        unique=True,
        help_text=_("The deal's key in the system it was imported from."),
    )

    stage = models.CharField(_("stage"), max_length=20, choices=Stage.choices, default=Stage.LEAD)
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.OPEN
    )

    # Stage 1: lead.
    currency = currency_field()
    estimated_value = money_field(_("estimated value"), null=True, blank=True)
    estimated_value_base = models.DecimalField(
        _("estimated value in base currency"), null=True, blank=True, **MONEY
    )
    first_touch_at = models.DateTimeField(_("first marketing touch"), null=True, blank=True)

    # Stage 2: qualification.
    heard_from = models.CharField(_("how they heard of us"), max_length=200, blank=True)
    contact_prompt = models.CharField(_("what prompted the contact"), max_length=200, blank=True)
    product_scope = models.CharField(_("product or service scope"), max_length=200, blank=True)
    industry = models.CharField(_("industry"), max_length=100, blank=True)
    segment = models.CharField(_("segment"), max_length=100, blank=True)
    qualification_score = models.PositiveSmallIntegerField(
        _("qualification score"),
        null=True,
        blank=True,
        validators=[MaxValueValidator(100)],
        help_text=_("0 to 100."),
    )

    # Stage 3: needs.
    problems = models.TextField(_("problems and challenges"), blank=True)
    desired_outcomes = models.TextField(_("desired outcomes"), blank=True)
    expected_close_date = models.DateField(_("expected close date"), null=True, blank=True)

    # Stage 5: negotiation (the agreed terms that let the deal enter closing).
    agreed_value = money_field(_("agreed value"), null=True, blank=True)
    agreed_value_base = models.DecimalField(
        _("agreed value in base currency"), null=True, blank=True, **MONEY
    )
    agreed_at = models.DateTimeField(_("terms agreed at"), null=True, blank=True)
    discount_pct = percent_field(
        _("discount %"),
        null=True,
        blank=True,
        help_text=_("The closing discount agreed with the client, 0 to 100."),
    )

    # Outcomes.
    won_at = models.DateTimeField(_("won at"), null=True, blank=True)
    lost_at = models.DateTimeField(_("lost at"), null=True, blank=True)
    lost_reason = models.ForeignKey(
        LostReason,
        verbose_name=_("lost reason"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="deals",
    )
    # NULL, not "": the outcome constraints test "no stage" with IS NULL.
    lost_stage = models.CharField(  # noqa: DJ001
        _("lost at stage"), max_length=20, choices=Stage.choices, null=True, blank=True
    )
    lost_note = models.TextField(_("lost note"), blank=True)

    # Stage stamps: the first entry into each stage, never rewritten.
    entered_lead_at = models.DateTimeField(_("entered lead"), default=timezone.now)
    entered_qualification_at = models.DateTimeField(
        _("entered qualification"), null=True, blank=True
    )
    entered_needs_at = models.DateTimeField(_("entered needs"), null=True, blank=True)
    entered_offer_at = models.DateTimeField(_("entered offer"), null=True, blank=True)
    entered_negotiation_at = models.DateTimeField(_("entered negotiation"), null=True, blank=True)
    entered_closing_at = models.DateTimeField(_("entered closing"), null=True, blank=True)

    # The latest moment of any transition: a new one may not precede it, so stamps stay
    # in order even across a loss and a reopen (which clears ``lost_at``).
    last_event_at = models.DateTimeField(_("last event at"), default=timezone.now)
    # Kept by every writer of stage history and activities (the domain functions, the
    # bulk import, the demo loader): the latest stage-history moment and the latest
    # activity held, so the stalled deals now are counted from the deal rows alone
    # (kpis.company.open_now) instead of two lookups per open deal.
    stage_changed_at = models.DateTimeField(
        _("last stage change"), null=True, blank=True, editable=False
    )
    last_activity_at = models.DateTimeField(
        _("last activity"), null=True, blank=True, editable=False
    )

    # Derived and kept by the domain functions: final value if won, else agreed value,
    # else the latest sent offer's value, else the estimate (domain.md, "Current value").
    current_value_base = models.DecimalField(
        _("current value"), null=True, blank=True, editable=False, **MONEY
    )
    # Optimistic concurrency: every write goes through an UPDATE ... WHERE version = seen.
    version = models.PositiveIntegerField(_("version"), default=1, editable=False)
    created_by = recorded_by(_("created by"))
    updated_at = models.DateTimeField(_("updated at"), default=timezone.now, editable=False)

    objects = DealQuerySet.as_manager()

    class Meta:
        ordering = ["-entered_lead_at", "-id"]
        verbose_name = _("deal")
        verbose_name_plural = _("deals")
        indexes = [
            models.Index(fields=["owner", "status", "stage"], name="deal_owner_status_stage"),
            models.Index(fields=["status", "stage"], name="deal_status_stage"),
            models.Index(fields=["entered_lead_at"], name="deal_entered_lead"),
            models.Index(fields=["entered_needs_at"], name="deal_entered_needs"),
            # The KPI families keyed on when a deal reached or left a stage find a
            # period's rows by these (kpis/families.py, ``Family.narrow``).
            models.Index(fields=["entered_qualification_at"], name="deal_entered_qualification"),
            models.Index(fields=["entered_offer_at"], name="deal_entered_offer"),
            models.Index(fields=["entered_negotiation_at"], name="deal_entered_negotiation"),
            models.Index(fields=["entered_closing_at"], name="deal_entered_closing"),
            models.Index(fields=["won_at"], name="deal_won_at"),
            models.Index(fields=["lost_at"], name="deal_lost_at"),
            # The customer timeline (kpis/timeline.py) reads every won deal's company,
            # day and value, and checks them unchanged, off this index alone on
            # PostgreSQL (other databases ignore ``include``).
            models.Index(
                fields=["company", "won_at"],
                include=["current_value_base"],
                condition=Q(status=Status.WON),
                name="deal_won_company",
            ),
            # The open deals now, by stage and slice, with the moments the stalled test
            # reads (kpis.company.open_now), and the open opportunities by expected
            # close date (the weighted pipeline and coverage, ``_open_pipeline``): each
            # read off its index alone on PostgreSQL, not by a scan of every deal.
            models.Index(
                fields=["stage", "owner", "channel", "segment", "industry"],
                include=["current_value_base", "stage_changed_at", "last_activity_at"],
                condition=Q(status=Status.OPEN),
                name="deal_open_now",
            ),
            models.Index(
                fields=["expected_close_date"],
                include=["owner", "stage", "current_value_base"],
                condition=Q(status=Status.OPEN, entered_needs_at__isnull=False),
                name="deal_open_pipeline",
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(stage__in=Stage.values), name="deal_stage_valid"),
            models.CheckConstraint(condition=Q(status__in=Status.values), name="deal_status_valid"),
            models.CheckConstraint(
                condition=Q(estimated_value__isnull=True) | Q(estimated_value__gte=0),
                name="deal_estimated_value_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(agreed_value__isnull=True) | Q(agreed_value__gte=0),
                name="deal_agreed_value_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(discount_pct__isnull=True)
                | Q(discount_pct__gte=0, discount_pct__lte=100),
                name="deal_discount_in_range",
            ),
            models.CheckConstraint(
                condition=Q(qualification_score__isnull=True)
                | Q(qualification_score__gte=0, qualification_score__lte=100),
                name="deal_score_in_range",
            ),
            models.CheckConstraint(
                condition=Q(first_touch_at__isnull=True)
                | Q(first_touch_at__lte=F("entered_lead_at")),
                name="deal_first_touch_before_lead",
            ),
            models.CheckConstraint(
                condition=Q(status=Status.WON, stage=Stage.CLOSING, won_at__isnull=False)
                | (~Q(status=Status.WON) & Q(won_at__isnull=True)),
                name="deal_won_consistent",
            ),
            models.CheckConstraint(
                condition=Q(
                    status=Status.LOST,
                    lost_at__isnull=False,
                    lost_reason__isnull=False,
                    lost_stage=F("stage"),
                )
                | (
                    ~Q(status=Status.LOST)
                    & Q(lost_at__isnull=True, lost_reason__isnull=True, lost_stage__isnull=True)
                ),
                name="deal_lost_consistent",
            ),
            models.CheckConstraint(
                condition=Q(won_at__isnull=True) | Q(won_at__gte=F("entered_closing_at")),
                name="deal_won_after_closing",
            ),
            models.CheckConstraint(
                condition=Q(lost_at__isnull=True) | Q(lost_at__gte=F("entered_lead_at")),
                name="deal_lost_after_lead",
            ),
            models.CheckConstraint(
                condition=Q(last_event_at__gte=F("entered_lead_at")),
                name="deal_last_event_after_lead",
            ),
            *_stamp_constraints(),
        ]

    def __str__(self):
        return self.title

    @property
    def is_open(self):
        return self.status == Status.OPEN

    @property
    def is_opportunity(self):
        return self.entered_needs_at is not None

    def stamp(self, stage):
        return getattr(self, stages.stamp_field(stage))

    def stage_stamps(self):
        """[(stage, first entry or None)] in funnel order."""
        return [(stage, self.stamp(stage)) for stage in stages.ORDER]


class RelatedToDealQuerySet(models.QuerySet):
    def visible_to(self, user):
        return self.filter(deal_owner_q(user, prefix="deal__"))


class StageEvent(models.TextChoices):
    CREATED = "created", _("Created")
    MOVED = "moved", _("Moved")
    SKIPPED = "skipped", _("Skipped")
    LOST = "lost", _("Lost")
    REOPENED = "reopened", _("Reopened")
    WON = "won", _("Won")


#: How far apart a row's business moment and its entry may be before the deal page shows
#: both: a form takes a few seconds to submit, a back-dated entry hours or days.
ENTERED_APART = datetime.timedelta(minutes=1)


def entered_apart(row):
    """A history or change-log row entered more than a minute away from the moment it
    records (back-dated, typically): the deal page then shows when it was entered too."""
    return abs(row.entered_at - row.at) > ENTERED_APART


def entered_at_field():
    """``entered_at`` of a history or change-log row: when the server wrote it, beside
    the business moment ``at`` it records."""
    return models.DateTimeField(
        _("entered at"),
        default=timezone.now,
        editable=False,
        help_text=_("When the row was written: the server's clock, never typed in."),
    )


class StageHistory(models.Model):
    """The append-only log of stage entries and outcomes. A forward move writes one
    ``moved`` row and one ``skipped`` row per stage it passed, all with the same moment."""

    deal = models.ForeignKey(
        Deal, verbose_name=_("deal"), on_delete=models.CASCADE, related_name="history"
    )
    event = models.CharField(_("event"), max_length=10, choices=StageEvent.choices)
    # NULL for the creation row: the deal came from no stage.
    from_stage = models.CharField(  # noqa: DJ001
        _("from stage"), max_length=20, choices=Stage.choices, null=True, blank=True
    )
    to_stage = models.CharField(_("to stage"), max_length=20, choices=Stage.choices)
    # ``at`` is the business moment, which a user may back-date ("the client agreed on
    # Monday"); ``entered_at`` is when the server wrote the row, for the auditor.
    at = models.DateTimeField(_("at"))
    entered_at = entered_at_field()
    by = recorded_by(_("by"))
    lost_reason = models.ForeignKey(
        LostReason,
        verbose_name=_("lost reason"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    note = models.TextField(_("note"), blank=True)

    objects = RelatedToDealQuerySet.as_manager()

    class Meta:
        ordering = ["at", "id"]
        verbose_name = _("stage history entry")
        verbose_name_plural = _("stage history")
        indexes = [
            models.Index(fields=["deal", "at"], name="history_deal_at"),
            models.Index(fields=["event", "to_stage", "at"], name="history_event_stage_at"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(event__in=StageEvent.values), name="history_event_valid"
            ),
        ]

    def __str__(self):
        return f"{self.deal_id} {self.event} {self.from_stage}→{self.to_stage} {self.at:%Y-%m-%d}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValueError("Stage history is append-only: rows are never changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Stage history is append-only: rows are never deleted.")

    entered_apart = property(entered_apart)

    @property
    def skipped(self):
        return self.event == StageEvent.SKIPPED


class DealChange(models.Model):
    """An edit of a tracked deal field (value, discount, owner, expected close date...)
    or of its closing document: who changed it, when, from what to what."""

    deal = models.ForeignKey(
        Deal, verbose_name=_("deal"), on_delete=models.CASCADE, related_name="changes"
    )
    field = models.CharField(_("field"), max_length=50)
    old_value = models.TextField(_("old value"), blank=True)
    new_value = models.TextField(_("new value"), blank=True)
    # As on StageHistory: ``at`` is the business moment, ``entered_at`` the write.
    at = models.DateTimeField(_("at"), default=timezone.now)
    entered_at = entered_at_field()
    by = recorded_by(_("by"))

    objects = RelatedToDealQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = _("deal change")
        verbose_name_plural = _("deal changes")

    def __str__(self):
        return f"{self.field}: {self.old_value} → {self.new_value}"

    entered_apart = property(entered_apart)


class ActivityKind(models.TextChoices):
    CALL = "call", _("Call")
    EMAIL = "email", _("E-mail")
    MEETING = "meeting", _("Meeting")
    AUDIT = "audit", _("Audit")


class Activity(models.Model):
    """A call, e-mail, meeting or audit held with the client."""

    deal = models.ForeignKey(
        Deal, verbose_name=_("deal"), on_delete=models.CASCADE, related_name="activities"
    )
    kind = models.CharField(_("kind"), max_length=10, choices=ActivityKind.choices)
    held_at = models.DateTimeField(_("held at"))
    outcome = models.CharField(_("outcome"), max_length=200, blank=True)
    notes = models.TextField(_("notes"), blank=True)
    by = recorded_by(_("logged by"), related_name="activities")

    objects = RelatedToDealQuerySet.as_manager()

    class Meta:
        ordering = ["-held_at", "-id"]
        verbose_name = _("activity")
        verbose_name_plural = _("activities")
        indexes = [
            models.Index(fields=["deal", "held_at"], name="activity_deal_held"),
            models.Index(fields=["held_at"], name="activity_held_at"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=ActivityKind.values), name="activity_kind_valid"
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.held_at:%Y-%m-%d}"


class OfferStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    SENT = "sent", _("Sent")
    ACCEPTED = "accepted", _("Accepted")
    REJECTED = "rejected", _("Rejected")
    SUPERSEDED = "superseded", _("Superseded")


class Offer(models.Model):
    """One version of the offer for a deal."""

    deal = models.ForeignKey(
        Deal, verbose_name=_("deal"), on_delete=models.CASCADE, related_name="offers"
    )
    version = models.PositiveSmallIntegerField(_("version"))
    value = money_field(_("value"))
    value_base = models.DecimalField(_("value in base currency"), **MONEY)
    prep_started_at = models.DateTimeField(_("preparation started"))
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    responded_at = models.DateTimeField(_("client responded at"), null=True, blank=True)
    status = models.CharField(
        _("status"), max_length=12, choices=OfferStatus.choices, default=OfferStatus.DRAFT
    )
    notes = models.TextField(_("notes"), blank=True)
    created_by = recorded_by(_("created by"))
    # Who recorded the sending and the client's answer (``domain.send_offer``,
    # ``accept_offer``, ``reject_offer``): not always the offer's author.
    sent_by = recorded_by(_("sent by"))
    responded_by = recorded_by(_("response recorded by"))

    objects = RelatedToDealQuerySet.as_manager()

    class Meta:
        ordering = ["deal", "version"]
        verbose_name = _("offer")
        verbose_name_plural = _("offers")
        indexes = [
            models.Index(fields=["sent_at"], name="offer_sent_at"),
            models.Index(fields=["responded_at"], name="offer_responded_at"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["deal", "version"], name="offer_version_unique"),
            models.CheckConstraint(condition=Q(value__gte=0), name="offer_value_non_negative"),
            models.CheckConstraint(condition=Q(version__gte=1), name="offer_version_positive"),
            models.CheckConstraint(
                condition=Q(status__in=OfferStatus.values), name="offer_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(sent_at__isnull=True) | Q(sent_at__gte=F("prep_started_at")),
                name="offer_sent_after_preparation",
            ),
            models.CheckConstraint(
                condition=Q(responded_at__isnull=True)
                | Q(sent_at__isnull=False, responded_at__gte=F("sent_at")),
                name="offer_response_after_sending",
            ),
            models.CheckConstraint(
                condition=Q(status=OfferStatus.DRAFT, sent_at__isnull=True)
                | Q(status=OfferStatus.SUPERSEDED)
                | Q(
                    status__in=[OfferStatus.SENT, OfferStatus.ACCEPTED, OfferStatus.REJECTED],
                    sent_at__isnull=False,
                ),
                name="offer_sent_status_consistent",
            ),
        ]

    def __str__(self):
        return f"v{self.version} {self.value} ({self.get_status_display()})"


class NegotiationRound(models.Model):
    deal = models.ForeignKey(
        Deal, verbose_name=_("deal"), on_delete=models.CASCADE, related_name="rounds"
    )
    number = models.PositiveSmallIntegerField(_("round"))
    held_at = models.DateTimeField(_("held at"))
    proposed_value = money_field(_("proposed value"))
    proposed_value_base = models.DecimalField(_("proposed value in base currency"), **MONEY)
    discount_pct = percent_field(_("discount %"), default=Decimal("0"))
    notes = models.TextField(_("notes"), blank=True)
    by = recorded_by(_("logged by"))

    objects = RelatedToDealQuerySet.as_manager()

    class Meta:
        ordering = ["deal", "number"]
        verbose_name = _("negotiation round")
        verbose_name_plural = _("negotiation rounds")
        constraints = [
            models.UniqueConstraint(fields=["deal", "number"], name="round_number_unique"),
            models.CheckConstraint(
                condition=Q(proposed_value__gte=0), name="round_value_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(discount_pct__gte=0, discount_pct__lte=100),
                name="round_discount_in_range",
            ),
        ]

    def __str__(self):
        return f"#{self.number} {self.proposed_value} (-{self.discount_pct}%)"


class DocumentType(models.TextChoices):
    PROFORMA = "proforma", _("Pro-forma invoice")
    CONTRACT = "contract", _("Contract")


class ClosingDocument(models.Model):
    """The pro-forma invoice or contract that closes a deal; signing (contract) or
    payment (pro-forma) makes the deal won."""

    deal = models.OneToOneField(
        Deal, verbose_name=_("deal"), on_delete=models.CASCADE, related_name="closing_document"
    )
    document_type = models.CharField(
        _("document type"), max_length=10, choices=DocumentType.choices
    )
    number = models.CharField(_("number"), max_length=60, blank=True)
    issue_date = models.DateField(_("issue date"))
    final_value = money_field(_("final value"))
    final_value_base = models.DecimalField(_("final value in base currency"), **MONEY)
    signed_at = models.DateTimeField(_("signed at"), null=True, blank=True)
    paid_at = models.DateTimeField(_("paid at"), null=True, blank=True)

    objects = RelatedToDealQuerySet.as_manager()

    class Meta:
        verbose_name = _("closing document")
        verbose_name_plural = _("closing documents")
        constraints = [
            models.CheckConstraint(
                condition=Q(final_value__gte=0), name="closing_value_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(document_type__in=DocumentType.values),
                name="closing_document_type_valid",
            ),
        ]

    def __str__(self):
        return f"{self.get_document_type_display()} {self.number}".strip()
