import dataclasses
import datetime
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.access import user_q
from funnel.stages import Stage
from kpis.periods import Grain, Period

MONEY = {"max_digits": 16, "decimal_places": 2}
# KPI values: enough digits for money sums at 1M deals, and for exact ratios.
VALUE = {"max_digits": 28, "decimal_places": 8}


class KpiSnapshot(models.Model):
    """One stored KPI value: for a KPI, a period (grain + first day), a slice and an
    optional breakdown. Keeps numerator and denominator so a report can show how the
    value was computed and list the deals behind each."""

    kpi = models.CharField(_("KPI"), max_length=60)
    grain = models.CharField(_("grain"), max_length=10, choices=Grain.choices)
    period_start = models.DateField(_("period start"))
    slice = models.CharField(_("slice"), max_length=140, default="company")
    breakdown = models.CharField(_("breakdown"), max_length=140, blank=True, default="")
    value = models.DecimalField(_("value"), null=True, blank=True, **VALUE)
    numerator = models.DecimalField(_("numerator"), null=True, blank=True, **VALUE)
    denominator = models.DecimalField(_("denominator"), null=True, blank=True, **VALUE)
    extra = models.JSONField(_("extra"), default=dict, blank=True)
    computed_at = models.DateTimeField(_("computed at"), default=timezone.now)

    class Meta:
        verbose_name = _("KPI snapshot")
        verbose_name_plural = _("KPI snapshots")
        constraints = [
            models.UniqueConstraint(
                fields=["kpi", "grain", "period_start", "slice", "breakdown"],
                name="snapshot_unique_key",
            ),
        ]
        indexes = [
            models.Index(fields=["grain", "period_start", "slice"], name="snapshot_period_slice"),
        ]

    def __str__(self):
        return f"{self.kpi} {self.period} {self.slice} {self.breakdown}: {self.value}"

    @property
    def period(self):
        return Period(self.grain, self.period_start)


@dataclasses.dataclass(slots=True)
class SnapshotRow:
    """One computed snapshot, not stored yet: a ``KpiSnapshot``'s fields. A model
    instance per row cost a full recompute 10 s of its million day rows."""

    kpi: str
    grain: str
    period_start: datetime.date
    slice: str
    breakdown: str
    value: Decimal | None
    numerator: Decimal | None
    denominator: Decimal | None
    extra: dict
    computed_at: datetime.datetime


#: ``SnapshotRow``'s fields, in order.
SNAPSHOT_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(SnapshotRow))


class DirtyDay(models.Model):
    """A local day whose KPIs must be recomputed (with every week, month, quarter and
    year containing it). Written in the same transaction as the change that caused it:
    the source of truth for freshness. ``generation`` grows on every new mark, so a
    recompute clears a mark only if nothing marked it again meanwhile."""

    day = models.DateField(_("day"), unique=True)
    generation = models.PositiveBigIntegerField(_("generation"), default=1)
    dirtied_at = models.DateTimeField(_("dirtied at"), default=timezone.now)
    # A worker's lease on the mark while it recomputes; an expired lease (the worker
    # died) lets the next sweep take the mark again.
    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True)
    # Whether every slice of the day's periods is recomputed. A deal's change marks its
    # days without it: its KPIs move only in the slices whose ledger rows it changed
    # (kpis.recompute.recompute_days). Inputs that are not deals (marketing spend) set
    # it; a deal's mark never clears it.
    whole = models.BooleanField(_("every slice"), default=True)
    # The families and slices whose ledger rows a deal's applied change moved on this
    # day ({family: [slice keys]}, kpis.changes.apply_pending): the KPIs to compute
    # again there. Emptied with the mark.
    scope = models.JSONField(_("changed slices"), default=dict, blank=True)

    class Meta:
        verbose_name = _("dirty day")
        verbose_name_plural = _("dirty days")

    def __str__(self):
        return f"{self.day} (generation {self.generation})"


class PendingChange(models.Model):
    """A deal changed since the ledger last took its measures: ``before`` is what the
    ledger's day rows hold for it (its contribution, kpis.compute.contributions, when
    it was taken), so the change is applied as the difference of its contributions
    after and before (kpis.changes) instead of its days gathered again. Written by the
    change, under the deal's row lock, unless one is pending already (the oldest is the
    one the ledger holds). Not a foreign key: the row outlives nothing but its deal's
    change, and a deal is never deleted."""

    deal_id = models.BigIntegerField(_("deal"), unique=True)
    before = models.JSONField(_("measures before"), default=list)
    #: What ``OpenNow`` holds for the deal (``kpis.opennow.state``): [] when it holds
    #: nothing (the deal is not open), None when not known (kept by an older release).
    before_open = models.JSONField(_("open deal before"), null=True, blank=True, default=None)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("pending change")
        verbose_name_plural = _("pending changes")

    def __str__(self):
        return f"deal {self.deal_id} since {self.created_at}"


class StaleMedian(models.Model):
    """A larger period's median of one family and slice, to be taken again from the
    deals: its days' rows changed (kpis.recompute.recompute_days). Medians are not
    additive, and the year's take reads a year of rows, so an incremental recompute
    leaves them to the step that follows it (``refresh_stale_medians``). Claimed and
    released like ``DirtyDay``; ``slice`` "" is every slice of the family."""

    grain = models.CharField(_("grain"), max_length=10, choices=Grain.choices)
    period_start = models.DateField(_("period start"))
    family = models.CharField(_("family"), max_length=40)
    slice = models.CharField(_("slice"), max_length=140, blank=True)
    generation = models.PositiveBigIntegerField(_("generation"), default=1)
    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True)

    class Meta:
        verbose_name = _("stale median")
        verbose_name_plural = _("stale medians")
        constraints = [
            models.UniqueConstraint(
                fields=["grain", "period_start", "family", "slice"], name="stale_median_key"
            )
        ]

    def __str__(self):
        return f"{self.grain} {self.period_start} {self.family} {self.slice or '*'}"


class TargetQuerySet(models.QuerySet):
    def visible_to(self, user):
        if user is None or not user.is_authenticated:
            return self.none()
        if user.is_lejek_admin:
            return self
        from accounts.models import User

        reps = User.objects.filter(user_q(user))
        teams = user.managed_teams.all() if user.is_manager else []
        return self.filter(Q(rep__in=reps) | Q(team__in=teams))


class Target(models.Model):
    """A revenue target of the company (no team, no rep), a team, or a rep, for one
    period. Targets of a month add up into quarters and years that have none."""

    grain = models.CharField(_("grain"), max_length=10, choices=Grain.choices, default=Grain.MONTH)
    period_start = models.DateField(_("period start"))
    team = models.ForeignKey(
        "accounts.Team",
        verbose_name=_("team"),
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="targets",
    )
    rep = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("rep"),
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="targets",
    )
    amount = models.DecimalField(
        _("target revenue"), validators=[MinValueValidator(Decimal(0))], **MONEY
    )
    set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("set by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    set_at = models.DateTimeField(_("set at"), default=timezone.now)

    objects = TargetQuerySet.as_manager()

    class Meta:
        ordering = ["-period_start"]
        verbose_name = _("target")
        verbose_name_plural = _("targets")
        constraints = [
            # One target per scope and period; the company's scope has no team and no
            # rep, so NULLs are folded to 0 (portable, unlike NULLS NOT DISTINCT).
            models.UniqueConstraint(
                "grain",
                "period_start",
                Coalesce("team", 0),
                Coalesce("rep", 0),
                name="target_unique_scope",
            ),
            models.CheckConstraint(
                condition=Q(team__isnull=True) | Q(rep__isnull=True), name="target_one_scope"
            ),
            models.CheckConstraint(condition=Q(amount__gte=0), name="target_non_negative"),
        ]

    def __str__(self):
        scope = self.rep or self.team or _("Company")
        return f"{scope} {Period(self.grain, self.period_start)}: {self.amount}"


class ForecastKind(models.TextChoices):
    COMMITTED = "committed", _("Committed by a manager")
    FROZEN = "frozen", _("Weighted pipeline frozen at the period's start")


class Forecast(models.Model):
    """The revenue forecast a period is judged against: a manager's committed forecast
    entered before the period began, else the weighted pipeline frozen at its start."""

    grain = models.CharField(_("grain"), max_length=10, choices=Grain.choices, default=Grain.MONTH)
    period_start = models.DateField(_("period start"))
    team = models.ForeignKey(
        "accounts.Team",
        verbose_name=_("team"),
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="forecasts",
    )
    kind = models.CharField(_("kind"), max_length=10, choices=ForecastKind.choices)
    amount = models.DecimalField(_("forecast revenue"), **MONEY)
    entered_at = models.DateTimeField(_("entered at"), default=timezone.now)
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("entered by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-period_start"]
        verbose_name = _("forecast")
        verbose_name_plural = _("forecasts")
        constraints = [
            models.UniqueConstraint(
                "grain", "period_start", Coalesce("team", 0), "kind", name="forecast_unique"
            ),
        ]

    def __str__(self):
        return f"{Period(self.grain, self.period_start)} {self.kind}: {self.amount}"


class StageSetting(models.Model):
    """Admin-set per-stage parameters: the default win probability used while too few
    deals closed to measure it, and the stall limit (default: twice the median stay)."""

    stage = models.CharField(_("stage"), max_length=20, choices=Stage.choices, unique=True)
    default_probability_pct = models.DecimalField(
        _("default win probability %"),
        max_digits=5,
        decimal_places=2,
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(100))],
    )
    stall_limit_days = models.PositiveIntegerField(
        _("stall limit (days)"),
        null=True,
        blank=True,
        help_text=_("Empty: twice the median time deals spend in this stage."),
    )

    class Meta:
        ordering = ["id"]
        verbose_name = _("stage setting")
        verbose_name_plural = _("stage settings")

    def __str__(self):
        return str(Stage(self.stage).label)


class RecomputeJob(models.Model):
    """A full recompute fanned out as one Celery task per part (a grain and a run of
    its periods), so that several workers share it: the day parts first, then the
    larger parts, which read the sums the days left in the ledger. The dirty marks present when it
    started are cleared when its last part is done (unless marked again meanwhile)."""

    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    parts = models.PositiveIntegerField(_("parts"))
    done = models.JSONField(_("parts done"), default=list)
    claimed = models.JSONField(_("dirty marks covered"), default=list)
    # [[grain, first period start, last period start], ...], day parts first: the
    # larger parts are sent once every day part is done (they read the day ledger).
    plan = models.JSONField(_("parts planned"), default=list)
    larger_sent = models.BooleanField(_("larger parts sent"), default=False)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("full recompute")
        verbose_name_plural = _("full recomputes")

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M} ({len(self.done)}/{self.parts})"


class HourlyRow(models.Model):
    """A statistic taken once an hour and stored under the hour: the recomputes and
    reports of that hour read the row instead of taking it again."""

    hour = models.DateTimeField(_("hour"), unique=True)
    computed_at = models.DateTimeField(_("computed at"), default=timezone.now)

    #: Rows older than this are deleted when a new one is stored.
    KEEP = datetime.timedelta(days=2)

    class Meta:
        abstract = True
        ordering = ["-hour"]

    @classmethod
    def store(cls, hour, **values):
        """Make ``values`` the row of ``hour`` (replacing any) and drop old rows."""
        cls.objects.bulk_create(
            [cls(hour=hour, **values)],
            update_conflicts=True,
            unique_fields=["hour"],
            update_fields=sorted({*values, "computed_at"}),
        )
        cls.objects.filter(hour__lt=hour - cls.KEEP).delete()


class MaturityHorizon(HourlyRow):
    """The cohort maturity horizon (domain.md, "Periods, slices and bases") of one
    hour: the 80th percentile of days to close over the trailing 12 months, taken once
    an hour by the first recompute or report that needs it. A report reads this row
    instead of a year of wins (180,000 rows at a million deals)."""

    days = models.DecimalField(_("days"), max_digits=12, decimal_places=4)

    class Meta(HourlyRow.Meta):
        verbose_name = _("maturity horizon")
        verbose_name_plural = _("maturity horizons")

    def __str__(self):
        return f"{self.hour:%Y-%m-%d %H:00}: {self.days} d"


class HourlyInputs(HourlyRow):
    """The trailing-12-month statistics the company KPIs weigh the open pipeline and
    the open deals with (kpis/company.py, ``take_inputs``): stage win probabilities,
    stall limits and each owner's won and lost opportunities. The first recompute of an
    hour takes them; the other recomputes of the hour read them, so one deal's
    transition does not scan a year of deals. A full recompute takes them afresh."""

    data = models.JSONField(_("data"), default=dict)
    pipeline_refreshed = models.BooleanField(
        _("pipeline refreshed"),
        default=False,
        help_text=_("Every period's weighted pipeline and coverage use these inputs."),
    )

    class Meta(HourlyRow.Meta):
        verbose_name = _("hourly inputs")
        verbose_name_plural = _("hourly inputs")

    def __str__(self):
        return f"{self.hour:%Y-%m-%d %H:00}"


class PeriodMeasures(models.Model):
    """The additive measures of every KPI family for one period, slice and breakdown
    (kpis/ledger.py): ``sums`` maps family -> measure -> exact sum, ``medians`` maps
    "family.measure" -> median. Day rows are computed from the deals; every larger
    period's sums are the sums of its days, kept so by adding each day's change."""

    grain = models.CharField(_("grain"), max_length=10, choices=Grain.choices)
    period_start = models.DateField(_("period start"))
    slice = models.CharField(_("slice"), max_length=140)
    breakdown = models.CharField(_("breakdown"), max_length=140, blank=True, default="")
    sums = models.JSONField(_("sums"), default=dict)
    medians = models.JSONField(_("medians"), default=dict)

    class Meta:
        verbose_name = _("period measures")
        verbose_name_plural = _("period measures")
        constraints = [
            models.UniqueConstraint(
                fields=["grain", "period_start", "slice", "breakdown"],
                name="measures_unique_key",
            ),
        ]

    def __str__(self):
        return f"{self.grain} {self.period_start} {self.slice} {self.breakdown}"


class LedgerState(models.Model):
    """One row: updating it serialises the writers of ``PeriodMeasures`` (a row lock
    on PostgreSQL, the write lock on SQLite), so each day's change is added to the
    larger periods exactly once. ``built_at``: when the day rows last covered the
    whole data span (until then an incremental recompute builds them first)."""

    taken_at = models.DateTimeField(_("taken at"), default=timezone.now)
    built_at = models.DateTimeField(_("built at"), null=True, blank=True)
    #: When ``OpenNow`` was last counted from the deals (None: never, or no longer
    #: right), and the stall limits its stalled deals were counted with; the changes
    #: applied since count a deal stalled as of that moment, with those limits.
    open_as_of = models.DateTimeField(_("open deals counted at"), null=True, blank=True)
    open_limits = models.JSONField(_("stall limits used"), null=True, blank=True)

    class Meta:
        verbose_name = _("measure ledger")
        verbose_name_plural = _("measure ledger")

    def __str__(self):
        return f"ledger built {self.built_at}"


class OpenNow(models.Model):
    """The open deals now of one slice, kept by difference like the ledger
    (kpis.opennow): {stage: [open deals, their value, stalled deals]}, the value a
    decimal string. Counted from the deals by a recompute of every slice of today
    (stalled as of that moment, ``LedgerState.open_as_of``); each applied change then
    adds its deal's difference."""

    slice = models.CharField(_("slice"), max_length=140, unique=True)
    stages = models.JSONField(_("per stage"), default=dict)

    class Meta:
        verbose_name = _("open deals now")
        verbose_name_plural = _("open deals now")

    def __str__(self):
        return self.slice
