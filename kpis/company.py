"""Company-level KPIs and the "now" KPIs (open deals per stage, stalled deals).

Most are formulas over the family measures already gathered for the period (revenue is
the won family's value); the rest need small direct queries: active reps, targets,
forecasts, customers, open pipeline by expected close date, and trailing-12-month
rates. Each query covers all slices of a period at once (grouped by owner, mapped to
team and rep), never a loop over deals. Definitions: docs/kpis.md, "Company level".
"""

import bisect
import contextlib
import threading
from collections import defaultdict
from decimal import Decimal

from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import Case, Count, DateField, F, Q, Sum, Value, When
from django.db.models.functions import Trunc

from accounts.models import Role, Team, User
from funnel import stages
from funnel.models import Deal
from funnel.stages import Status
from kpis import changes, opennow
from kpis.families import (
    FAMILIES,
    SLICE_FIELDS,
    SLICE_NAMES,
    pipeline_measure,
    rolled_up_rows,
    slice_columns,
)
from kpis.models import (
    Forecast,
    ForecastKind,
    HourlyInputs,
    SnapshotRow,
    StageSetting,
    Target,
)
from kpis.periods import Grain, Period, hour_of, local_midnight, tz
from kpis.spend import sales_cost_by_period
from kpis.timeline import OwnerTimeline, customer_timeline, year_before_day

MIN_CLOSED = 20
HUNDRED = Decimal(100)


def year_before(moment):
    """The same local wall-clock moment one calendar year earlier (Feb 29 -> Feb 28)."""
    moment = moment.astimezone(tz())
    try:
        return moment.replace(year=moment.year - 1)
    except ValueError:
        return moment.replace(year=moment.year - 1, day=28)


def ratio(num, den, scale=1):
    if num is None or den is None or den == 0:
        return None
    return Decimal(num) / Decimal(den) * scale


def _people():
    """Owner id -> team id for everyone who can own deals, teams, and reps."""
    owners = dict(User.objects.values_list("id", "team_id"))
    reps = set(User.objects.filter(role=Role.REP).values_list("id", flat=True))
    teams = list(Team.objects.values_list("id", flat=True))
    return owners, reps, teams


def _scopes(owner_id, owners):
    out = ["company", f"rep:{owner_id}"]
    team = owners.get(owner_id)
    if team is not None:
        out.append(f"team:{team}")
    return out


def stage_probabilities(now):
    """Win probability per stage: the share won of deals that reached the stage in the
    12 months before ``now`` (domain.md, to the letter: the deals still open count, as
    not won); the admin default while fewer than 20 of them are closed."""
    settings = dict(StageSetting.objects.values_list("stage", "default_probability_pct"))
    since = year_before(now)
    out = {}
    for stage in stages.ORDER:
        stamp = stages.stamp_field(stage)
        counts = Deal.objects.filter(**{f"{stamp}__gte": since, f"{stamp}__lt": now}).aggregate(
            reached=Count("pk"),
            won=Count("pk", filter=Q(status=Status.WON)),
            closed=Count("pk", filter=Q(status__in=[Status.WON, Status.LOST])),
        )
        if counts["closed"] >= MIN_CLOSED:
            out[stage] = Decimal(counts["won"]) / Decimal(counts["reached"])
        elif stage in settings:
            out[stage] = settings[stage] / HUNDRED
        else:
            out[stage] = Decimal(0)  # no measure, no default: adds nothing
    return out


def _outcomes_by_owner(start_at, end_at):
    """Won count, value, cycle days and lost opportunities per owner in a window."""
    won = Deal.objects.filter(status=Status.WON, won_at__gte=start_at, won_at__lt=end_at)
    lost = Deal.objects.filter(
        status=Status.LOST,
        lost_at__gte=start_at,
        lost_at__lt=end_at,
        entered_needs_at__isnull=False,
    )
    out = defaultdict(lambda: {"won": 0, "value": Decimal(0), "cycle": Decimal(0), "lost": 0})
    for row in (
        won.order_by()
        .values("owner_id")
        .annotate(
            n=Count("pk"),
            value=Sum("current_value_base"),
            cycle=Sum(F("won_at") - F("entered_needs_at")),
        )
    ):
        entry = out[row["owner_id"]]
        entry["won"] += row["n"]
        entry["value"] += row["value"] or 0
        entry["cycle"] += _days(row["cycle"]) or 0
    for row in lost.order_by().values("owner_id").annotate(n=Count("pk")):
        out[row["owner_id"]]["lost"] += row["n"]
    return out


def _open_pipeline(first, end, grain=Grain.DAY):
    """[(period start, owner, stage, Σ current value)] of the open opportunities whose
    expected close date falls in [first, end), by its ``grain`` period."""
    rows = (
        Deal.objects.open()
        .opportunities()
        .filter(expected_close_date__gte=first, expected_close_date__lt=end)
        .annotate(
            _bucket=F("expected_close_date")
            if grain == Grain.DAY  # a date is its day: nothing to truncate or convert
            else Trunc("expected_close_date", grain, output_field=DateField())
        )
        .order_by()
        .values_list("_bucket", "owner_id", "stage")
        .annotate(value=Sum("current_value_base"))
    )
    return list(rows)


def _roll_up(per_owner, owners, fields):
    out = defaultdict(lambda: dict.fromkeys(fields, 0))
    for owner_id, values in per_owner.items():
        for scope in _scopes(owner_id, owners):
            for f in fields:
                out[scope][f] = out[scope][f] + values[f]
    return out


def _weighed(by_stage, probabilities):
    """(Σ value, Σ value × the stage's probability) of {stage: Σ value}, in stage order."""
    total = weighted = Decimal(0)
    for stage in stages.ORDER:
        value = by_stage.get(stage, 0)
        total += value
        weighted += value * probabilities[stage]
    return total, weighted


def _days(delta):
    from kpis.compute import number

    return number(delta)


class CompanyKpis:
    def __init__(self, grain, periods, measures, spend, now, computed_at, slices=None):
        """``slices``: the KPIs of those slices only (a batch of deal changes: the
        slices of the changed deals, whose readings alone can have moved)."""
        self.only = None if slices is None else frozenset(slices)
        self.grain = grain
        self.periods = periods
        self.measures = measures
        self.spend = spend
        self.now = now
        self.computed_at = computed_at
        # The same people for every grain of a pass (``sharing``).
        self.owners, self.reps, self.teams = shared("people", _people)
        self.rows = []

    def add(self, code, period, slice_, value, num=None, den=None, extra=None):
        if self.only is not None and slice_ not in self.only:
            return
        self.rows.append(
            SnapshotRow(
                kpi=code,
                grain=self.grain,
                period_start=period.start,
                slice=slice_,
                breakdown="",
                value=value,
                numerator=num,
                denominator=den,
                extra=extra or {},
                computed_at=self.computed_at,
            )
        )

    def m(self, period, slice_, family, measure):
        return self.measures.get((period.start, slice_, ""), family, measure)

    def inputs(self):
        """The trailing-12-month statistics (``take_inputs``): this hour's stored ones
        after ``use_hour_inputs()``, else taken now, once per recompute."""
        return shared("inputs", lambda: take_inputs(self.now))

    def pipeline_inputs(self, from_ledger=False):
        """(targets, open pipeline by period and scope, trailing outcomes by scope): what
        the weighted pipeline and coverage read (``open_pipeline``)."""
        inputs = self.inputs()
        pipeline = self.open_pipeline(inputs["probabilities"], from_ledger)
        return self.targets(), pipeline, _roll_up(inputs["trailing"], self.owners, ("won", "lost"))

    def people_slices(self):
        every = ["company", *(f"team:{t}" for t in self.teams), *(f"rep:{r}" for r in self.reps)]
        return every if self.only is None else [s for s in every if s in self.only]

    # --- inputs that need their own queries -----------------------------------------

    def active_reps(self, period):
        """Reps with a deal alive in the period: created before its end and not won or
        lost before its start."""
        out = defaultdict(int)
        start, end = period.start, period.end
        for rep_id in self.reps:
            if self.timeline.active(rep_id, start, end):
                out["company"] += 1
                out[f"rep:{rep_id}"] += 1
                team_id = self.owners.get(rep_id)
                if team_id is not None:
                    out[f"team:{team_id}"] += 1
        return out

    def targets(self):
        """{(period start, scope): amount}; months add up into quarters and years that
        have no target of their own."""
        first, end = self.periods[0].start, self.periods[-1].end
        explicit = {}
        monthly = defaultdict(Decimal)
        for t in Target.objects.filter(period_start__gte=first, period_start__lt=end):
            scope = (
                f"rep:{t.rep_id}" if t.rep_id else f"team:{t.team_id}" if t.team_id else "company"
            )
            if t.grain == self.grain:
                explicit[(t.period_start, scope)] = t.amount
            if t.grain == Grain.MONTH and self.grain in (Grain.QUARTER, Grain.YEAR):
                monthly[(Period.containing(self.grain, t.period_start).start, scope)] += t.amount
        return {**monthly, **explicit}

    def open_pipeline(self, probabilities, from_ledger=False):
        """{(period start, scope): (Σ current value, Σ weighted)} of open opportunities
        by the period of their expected close date. ``from_ledger``: from the measures'
        ``pipeline`` family (they hold every people slice of the periods: a recompute's
        gathered or loaded measures); else from the deals, in one query."""
        values = defaultdict(lambda: defaultdict(Decimal))  # (start, scope) -> stage -> Σ
        if from_ledger:
            for period in self.periods:
                for scope in self.people_slices():
                    for stage in stages.ORDER:
                        value = self.m(period, scope, "pipeline", pipeline_measure(stage))
                        values[(period.start, scope)][stage] += value
        else:
            first, end = self.periods[0].start, self.periods[-1].end
            # By owner first, then into the owner's scopes: a few rows per owner.
            per_owner = defaultdict(lambda: defaultdict(Decimal))
            for bucket, owner_id, stage, value in _open_pipeline(first, end, self.grain):
                per_owner[(bucket, owner_id)][stage] += value or 0
            for (bucket, owner_id), by_stage in per_owner.items():
                for scope in _scopes(owner_id, self.owners):
                    for stage, value in by_stage.items():
                        values[(bucket, scope)][stage] += value
        # Weighed from the sums per stage alike on both ways: the same digits.
        return {key: _weighed(by_stage, probabilities) for key, by_stage in values.items()}

    def new_customers(self):
        """{period start: companies whose first win falls in the period}."""
        wins = self.customers.first_win  # sorted
        return {
            p.start: bisect.bisect_left(wins, p.end) - bisect.bisect_left(wins, p.start)
            for p in self.periods
        }

    # --- the KPIs -------------------------------------------------------------------

    def compute(self, customers=True, with_pipeline=True):
        """Every company-level KPI of the periods; without ``customers``, none of
        ``CUSTOMER_KPIS`` (nor their inputs read); without ``with_pipeline``, none of
        ``PIPELINE_KPIS``."""
        self.timeline = shared("owner_timeline", OwnerTimeline)
        targets, pipeline, trailing = self.pipeline_inputs(from_ledger=True)
        forecasts = self.forecasts()
        new_customers = sales_cost = None
        if customers:
            self.customer_inputs()
            new_customers = self.new_customers()
            sales_cost = sales_cost_by_period(
                self.grain, self.periods[0].start, self.periods[-1].end
            )
        for period in self.periods:
            if with_pipeline:
                self.pipeline_kpis(period, targets, pipeline, trailing)
            if self.has_history(period):
                self.period_kpis(period, targets, pipeline, trailing, forecasts)
                if customers:
                    self.company_only(period, new_customers, sales_cost)
        self.now_kpis()
        return self.rows

    def customer_inputs(self):
        self.customers = shared("customer_timeline", customer_timeline)
        ends = [p.end for p in self.periods]
        self.churned = dict(
            zip(
                ends,
                self.customers.lost_between([(p.start, p.end) for p in self.periods]),
                strict=True,
            )
        )
        self.churned_in_year = dict(
            zip(
                ends,
                self.customers.lost_between([(year_before_day(e), e) for e in ends]),
                strict=True,
            )
        )

    def has_history(self, period):
        """A period still to come has no history; its time series (open opportunities at
        its start, active reps, customers...) would only repeat today's state and go
        stale with every change: not stored."""
        return period.start <= self.now.astimezone(tz()).date()

    def cycle_median(self, period, slice_):
        self.add(
            "sales_cycle_days_median",
            period,
            slice_,
            self.measures.median((period.start, slice_, ""), "won", "cycle_days"),
        )

    def medians_only(self):
        """The company-level KPIs that read the measures' medians alone (what a refresh
        of the larger periods' medians moves): none of ``compute``'s other inputs."""
        for period in filter(self.has_history, self.periods):
            for slice_ in self.people_slices():
                self.cycle_median(period, slice_)
        return self.rows

    def forecasts(self):
        out = {}
        qs = Forecast.objects.filter(
            grain=self.grain,
            period_start__in=[p.start for p in self.periods],
        ).order_by("kind", "entered_at")
        for f in qs:
            scope = f"team:{f.team_id}" if f.team_id else "company"
            key = (f.period_start, scope)
            committed_in_time = f.kind == ForecastKind.COMMITTED and f.entered_at < local_midnight(
                f.period_start
            )
            if committed_in_time:
                out[key] = f.amount  # a committed forecast wins over the frozen pipeline
            elif f.kind == ForecastKind.FROZEN and key not in out:
                out[key] = f.amount
        return out

    def period_kpis(self, period, targets, pipeline, trailing, forecasts):
        active = self.active_reps(period)
        previous = period.previous()
        velocity = self.velocity_inputs(period)
        for slice_ in self.people_slices():
            revenue = self.m(period, slice_, "won", "value")
            won = self.m(period, slice_, "won", "n")
            self.add("revenue", period, slice_, revenue, revenue)
            prev = self.m(previous, slice_, "won", "value")
            self.add(
                "revenue_growth_pct",
                period,
                slice_,
                ratio(revenue - prev, prev, 100),
                revenue - prev,
                prev,
            )
            self.add("avg_deal_size", period, slice_, ratio(revenue, won), revenue, won)
            cycle = self.m(period, slice_, "won", "cycle_days")
            self.add("sales_cycle_days", period, slice_, ratio(cycle, won), cycle, won)
            self.cycle_median(period, slice_)
            n, w, s, c = velocity.get(slice_, (0, None, None, None))
            if None in (w, s, c) or c == 0:
                self.add("pipeline_velocity", period, slice_, None, None, c, {"open": n})
            else:
                num = Decimal(n) * w * s
                self.add("pipeline_velocity", period, slice_, num / c, num, c, {"open": n})
            target = targets.get((period.start, slice_))
            self.add(
                "target_attainment_pct",
                period,
                slice_,
                ratio(revenue, target, 100),
                revenue,
                target,
            )
            reps_here = active.get(slice_, 0)
            for code, family, measure in (
                ("calls_per_rep", "needs_activity", "calls"),
                ("emails_per_rep", "needs_activity", "emails"),
                ("meetings_per_rep", "needs_activity", "meetings"),
            ):
                count = self.m(period, slice_, family, measure)
                self.add(code, period, slice_, ratio(count, reps_here), count, reps_here)
            if slice_.startswith("rep:"):
                continue
            self.add(
                "rep_productivity", period, slice_, ratio(revenue, reps_here), revenue, reps_here
            )
            leads = self.m(period, slice_, "lead", "n")
            self.add("new_leads_per_rep", period, slice_, ratio(leads, reps_here), leads, reps_here)
            self.quota(period, slice_, targets)
            self.forecast_accuracy(period, slice_, revenue, forecasts.get((period.start, slice_)))

    def pipeline_kpis(self, period, targets, pipeline, trailing):
        """Weighted pipeline and coverage: open opportunities by the period of their
        expected close date, weighted by today's stage probabilities. They depend on
        the whole open pipeline as it is now, so every recompute refreshes them for
        every period (``refresh_pipeline``)."""
        for slice_ in self.people_slices():
            open_value, weighted = pipeline.get((period.start, slice_), (Decimal(0), Decimal(0)))
            self.add("weighted_pipeline", period, slice_, weighted, weighted)
            target = targets.get((period.start, slice_))
            revenue = self.m(period, slice_, "won", "value") if target is not None else None
            self.coverage(period, slice_, open_value, target, revenue, trailing)

    def pipeline_only(self):
        """The pipeline KPIs of every period, with the won value of the periods that
        have a target (coverage needs it) from one query per such period."""
        targets, pipeline, trailing = self.pipeline_inputs()
        by_start = {p.start: p for p in self.periods}
        for start in sorted({start for start, _ in targets if start in by_start}):
            period = by_start[start]
            won = _outcomes_by_owner(period.start_at, period.end_at)
            for scope, values in _roll_up(won, self.owners, ("value",)).items():
                self.measures.sums[(start, scope, "")]["won"] = {"value": values["value"]}
        for period in self.periods:
            self.pipeline_kpis(period, targets, pipeline, trailing)
        return self.rows

    def coverage(self, period, slice_, open_value, target, revenue, trailing):
        t = trailing.get(slice_, {"won": 0, "lost": 0})
        win_rate = ratio(t["won"], t["won"] + t["lost"])
        extra = {"coverage_needed": float(1 / win_rate) if win_rate else None}
        if target is None:
            self.add("pipeline_coverage", period, slice_, None, open_value, None, extra)
            return
        gap = target - revenue
        if gap <= 0:
            extra["target_met"] = True
            self.add("pipeline_coverage", period, slice_, None, open_value, gap, extra)
            return
        self.add("pipeline_coverage", period, slice_, open_value / gap, open_value, gap, extra)

    def quota(self, period, slice_, targets):
        reps = [
            r for r in self.reps if slice_ == "company" or f"team:{self.owners.get(r)}" == slice_
        ]
        with_target = [r for r in reps if (period.start, f"rep:{r}") in targets]
        at_quota = [
            r
            for r in with_target
            if self.m(period, f"rep:{r}", "won", "value") >= targets[(period.start, f"rep:{r}")]
        ]
        self.add(
            "quota_attainment_pct",
            period,
            slice_,
            ratio(len(at_quota), len(with_target), 100),
            len(at_quota),
            len(with_target),
        )

    def forecast_accuracy(self, period, slice_, actual, forecast):
        if forecast is None or actual == 0:
            self.add("forecast_accuracy_pct", period, slice_, None, forecast, actual)
            return
        accuracy = max(Decimal(0), 1 - abs(actual - forecast) / actual) * HUNDRED
        bias = (forecast - actual) / actual * HUNDRED
        self.add(
            "forecast_accuracy_pct",
            period,
            slice_,
            accuracy,
            forecast,
            actual,
            {"bias_pct": float(bias)},
        )

    def velocity_inputs(self, period):
        """Per scope: N open opportunities at the period's start; W, S, C over the 12
        months ending there."""
        start = period.start
        n, outcomes = {}, {}
        for owner in self.timeline.owners():
            n[owner] = {"n": self.timeline.open_opportunities(owner, start)}
            outcomes[owner] = self.timeline.trailing_outcomes(owner, start)
        n = _roll_up(n, self.owners, ("n",))
        outcomes = _roll_up(outcomes, self.owners, ("won", "value", "cycle", "lost"))
        out = {}
        for scope in set(n) | set(outcomes):
            o = outcomes.get(scope, {"won": 0, "value": 0, "cycle": 0, "lost": 0})
            if not o["won"] and not o["lost"] and not n.get(scope, {"n": 0})["n"]:
                continue
            win = ratio(o["won"], o["won"] + o["lost"])
            size = ratio(o["value"], o["won"])
            cycle = ratio(o["cycle"], o["won"])
            out[scope] = (n.get(scope, {"n": 0})["n"], win, size, cycle)
        return out

    def company_only(self, period, new_customers, sales_cost):
        revenue = self.m(period, "company", "won", "value")
        spend = self.spend.get((period.start, "company"), Decimal(0))
        cost = spend + sales_cost.get((period.start, "company"), Decimal(0))
        customers = new_customers.get(period.start, 0)
        self.add("cac", period, "company", ratio(cost, customers), cost, customers)
        self.add(
            "sales_cost_ratio_pct", period, "company", ratio(cost, revenue, 100), cost, revenue
        )
        active_at_start = self.customers.active_count(period.start)
        churned = self.churned[period.end]
        self.add(
            "churn_pct",
            period,
            "company",
            ratio(churned, active_at_start, 100),
            churned,
            active_at_start,
        )
        customers_total, repeat = self.customers.customers_before(period.end)
        self.add(
            "repeat_customer_pct",
            period,
            "company",
            ratio(repeat, customers_total, 100),
            repeat,
            customers_total,
        )
        self.clv(period)

    def clv(self, period):
        end = period.end
        active_then = self.customers.active_count(year_before_day(end))
        active_now = self.customers.active_count(end)
        annual_churn = ratio(self.churned_in_year[end], active_then)
        value = self.customers.active_value(end) if active_now else Decimal(0)
        per_customer = ratio(value, active_now)
        extra = {
            "value_per_customer_year": float(per_customer) if per_customer is not None else None,
            "annual_churn": float(annual_churn) if annual_churn is not None else None,
        }
        if per_customer is None or not annual_churn:
            self.add("clv", period, "company", None, per_customer, annual_churn, extra)
            return
        self.add(
            "clv", period, "company", per_customer / annual_churn, per_customer, annual_churn, extra
        )

    # --- now ------------------------------------------------------------------------

    def now_kpis(self):
        """Open deals and value per stage, and stalled deals, as of now: stored for the
        period that contains today."""
        today = self.now.astimezone(tz()).date()
        current = [p for p in self.periods if p.start <= today < p.end]
        if not current:
            return
        period = current[0]
        for key, by_stage in shared("open_now", self.open_now).items():
            for stage in stages.ORDER:
                n, value, _ = by_stage.get(stage, (0, Decimal(0), 0))
                self.add(f"open_deals_{stage}", period, key, Decimal(n), Decimal(n))
                self.add(f"open_value_{stage}", period, key, value, value)
            total_stalled = sum(v[2] for v in by_stage.values())
            self.add("stalled_deals", period, key, Decimal(total_stalled), Decimal(total_stalled))

    def open_now(self):
        """{slice: {stage: (open deals, value, stalled)}}: of the slices asked, as kept
        by difference (kpis.opennow); of every slice, or when the stall limits of the
        inputs are not those the table was counted with, counted from the deals and kept
        (stalled deals as of now, with those limits)."""
        limits = self.inputs()["stall_limits"]
        if self.only is not None:
            # Kept while counted with the stall limits in use (new inputs may move them).
            counted = opennow.as_counted()
            if counted is not None and counted[1] == limits:
                return opennow.read(self.only)
        return changes.count_open(lambda: open_now(self.now, limits, self.owners), self.now, limits)


def open_now(now, limits, teams):
    """{slice: {stage: [open deals, their value, stalled]}} as of ``now`` (stalled by the
    stall ``limits``; ``teams``: each owner's team, ``_people``): one grouped query over
    the open deals. A deal is stalled when its latest stage change (a move, a skip or a
    reopening) and its latest activity are both older than its stage's limit; the deal
    row keeps both moments (``Deal.stage_changed_at``, ``Deal.last_activity_at``)."""
    stalled = Q()
    for stage, cutoff in opennow.stall_cutoffs(now, limits).items():
        stalled |= Q(stage=stage, stage_changed_at__lt=cutoff) & (
            Q(last_activity_at__isnull=True) | Q(last_activity_at__lt=cutoff)
        )
    base = Deal.objects.open()
    per_slice = defaultdict(lambda: defaultdict(lambda: [0, Decimal(0), 0]))
    per_slice["company"]  # always present, even with no open deal
    # No stage with a limit (no history, no admin limit): no deal is stalled. An empty
    # Q() as an aggregate's filter would count every deal.
    stalled = stalled or Q(pk__in=[])
    # One query grouped by every slice column at once (the open deals' stalled test
    # runs once per deal). The team is the owner's, looked up without the join to the
    # users: PostgreSQL reads the open deals off one partial index alone
    # (``deal_open_now``; at 1M deals 0.05 s instead of 0.45 s for a scan of every deal).
    if connection.vendor == "postgresql":
        _open_now_rolled_up(base, stalled, teams, per_slice)
        return per_slice
    # Elsewhere grouped by every combination of them, rolled up into the slices here.
    columns = {
        f"_s_{slice_type}": F(path)
        for slice_type, path in SLICE_FIELDS.items()
        if slice_type != "team"
    }
    rows = (
        base.annotate(**columns)
        .order_by()
        .values("stage", *columns)
        .annotate(
            # Counted by a column the index holds (the stage, never empty), not the key.
            n=Count("stage"),
            value=Sum("current_value_base"),
            stalled=Count("stage", filter=stalled),
        )
    )
    for row in rows:
        row["_s_team"] = teams.get(row["_s_rep"])
        keys = ["company"]
        keys += [
            f"{slice_type}:{row[f'_s_{slice_type}']}"
            for slice_type in SLICE_FIELDS
            if row[f"_s_{slice_type}"] not in (None, "")
        ]
        for key in keys:
            entry = per_slice[key][row["stage"]]
            entry[0] += row["n"]
            entry[1] += row["value"] or 0
            entry[2] += row["stalled"]
    return per_slice


def _open_now_rolled_up(base, stalled, teams, per_slice):
    """PostgreSQL: ``open_now``'s counts rolled up by the database into each slice
    (``families.rolled_up_rows``): a few rows per stage and slice instead of one per
    combination of owner, channel, segment and industry. The team is the owner's,
    listed in a CASE (``team_of``): no join to the users."""
    members = sorted((owner, team) for owner, team in teams.items() if team is not None)
    inner = (
        base.annotate(
            **slice_columns(members=members),
            _stalled=Case(When(stalled, then=Value(1)), default=Value(0)),
        )
        .order_by()
        .values("stage", *SLICE_NAMES, "current_value_base", "_stalled")
    )
    sql, params = inner.query.sql_with_params()
    aggregates = ["COUNT(*)", 'SUM("current_value_base")', 'SUM("_stalled")']
    for stage, key, (count, value, stalled_n) in rolled_up_rows(sql, params, '"stage"', aggregates):
        entry = per_slice[key][stage]
        entry[0] += count
        entry[1] += value or 0
        entry[2] += stalled_n


_pass = threading.local()


@contextlib.contextmanager
def sharing():
    """Inside: the inputs that do not depend on the grain (timelines, stage
    probabilities, the open deals now...) are computed once for every grain of the
    recompute, not once per grain."""
    if getattr(_pass, "cache", None) is not None:
        yield
        return
    _pass.cache = {}
    try:
        yield
    finally:
        _pass.cache = None


def shared(key, factory):
    cache = getattr(_pass, "cache", None)
    if cache is None:
        return factory()
    if key not in cache:
        cache[key] = factory()
    return cache[key]


def preset(key, value):
    """Inside ``sharing()``: what ``shared(key, …)`` returns for the rest of it."""
    cache = getattr(_pass, "cache", None)
    if cache is None:
        raise RuntimeError(f"preset({key!r}) outside company.sharing()")
    cache[key] = value


def take_inputs(now):
    """The statistics over the 12 months before ``now`` that the company KPIs of every
    period share: stage win probabilities (weighted pipeline), stall limits (stalled
    deals) and each owner's wins and lost opportunities (coverage needed)."""
    trailing = _outcomes_by_owner(year_before(now), now)
    return {
        "probabilities": stage_probabilities(now),
        "stall_limits": stall_limits(now),
        "trailing": {owner: {"won": v["won"], "lost": v["lost"]} for owner, v in trailing.items()},
    }


def _encode_inputs(inputs):
    return {
        "probabilities": {stage: str(p) for stage, p in inputs["probabilities"].items()},
        "stall_limits": inputs["stall_limits"],
        "trailing": [[owner, v["won"], v["lost"]] for owner, v in inputs["trailing"].items()],
    }


def _decode_inputs(data):
    return {
        "probabilities": {stage: Decimal(p) for stage, p in data["probabilities"].items()},
        "stall_limits": data["stall_limits"],
        "trailing": {owner: {"won": won, "lost": lost} for owner, won, lost in data["trailing"]},
    }


def store_inputs(now):
    """Take the inputs at ``now`` and store them as its hour's (replacing any)."""
    inputs = take_inputs(now)
    HourlyInputs.store(
        hour_of(now), data=_encode_inputs(inputs), pipeline_refreshed=False, computed_at=now
    )
    return inputs


def use_hour_inputs(now, fresh=False):
    """Inside ``sharing()``: make the company KPIs use the inputs stored for ``now``'s
    hour (taken and stored now if there are none, or with ``fresh``). Returns whether
    they were taken now."""
    return _use_inputs(
        None if fresh else HourlyInputs.objects.filter(hour=hour_of(now)).first(), now
    )


def use_latest_inputs(now):
    """Inside ``sharing()``: make the company KPIs use the latest inputs stored up to
    ``now``'s hour: this hour's, or an earlier hour's until ``refresh_hour`` has taken
    this hour's (after the dirty days, so that a transition's snapshots do not wait for
    a year of deals to be scanned). Taken and stored now when none are stored."""
    _use_inputs(HourlyInputs.objects.filter(hour__lte=hour_of(now)).order_by("-hour").first(), now)


def _use_inputs(row, now):
    """Preset the inputs of a stored ``row``, or, without one, take and store them at
    ``now``. Returns whether they were taken now."""
    preset("inputs", store_inputs(now) if row is None else _decode_inputs(row.data))
    return row is None


def hour_pending(now):
    """Whether ``now``'s hour still waits for its inputs or for every period's
    pipeline KPIs to be refreshed with them."""
    return not HourlyInputs.objects.filter(hour=hour_of(now), pipeline_refreshed=True).exists()


def pipeline_refreshed(now):
    """Every period's pipeline KPIs now use the inputs of ``now``'s hour."""
    HourlyInputs.objects.filter(hour=hour_of(now)).update(pipeline_refreshed=True)


def forget_inputs():
    """Drop the stored inputs and maturity horizons (after a bulk load): the next
    recompute, or the next report, takes them again."""
    from kpis.reading import forget_maturity  # kpis.reading reads this module's inputs

    HourlyInputs.objects.all().delete()
    forget_maturity()


def stall_limits(now):
    """Days after which an open deal in each stage counts as stalled: the admin's limit,
    else twice the median stay in the stage over the 12 months before ``now``."""
    explicit = dict(
        StageSetting.objects.filter(stall_limit_days__isnull=False).values_list(
            "stage", "stall_limit_days"
        )
    )
    since = year_before(now)
    out = {}
    for stage in stages.ORDER:
        if stage in explicit:
            out[stage] = explicit[stage]
            continue
        family = FAMILIES[f"stay_{stage}"]
        median = median_days(family.in_range(since, now), family.medians["days"])
        out[stage] = float(2 * median) if median is not None else None
    return out


def median_days(queryset, expression):
    """The median of a duration ``expression`` over ``queryset``, in days (None when
    there are no rows)."""
    return percentile_days(queryset, expression, 50)


def percentile_days(queryset, expression, pct, min_rows=1):
    """The ``pct`` percentile (linear interpolation between closest ranks, as numpy's
    default and PostgreSQL's ``percentile_cont``) of a duration ``expression`` over
    ``queryset``, in days; None when there are fewer than ``min_rows`` rows. One query,
    the percentile computed by the database on PostgreSQL, here on SQLite."""
    queryset = queryset.annotate(_value=expression).order_by()
    if connection.vendor == "postgresql":
        try:
            inner, params = queryset.values("_value").query.sql_with_params()
        except EmptyResultSet:  # a condition no row can meet (``.none()``, ``pk__in=[]``)
            return None
        fraction = float(pct) / 100
        sql = (
            f'SELECT count(*), percentile_cont({fraction!r}) WITHIN GROUP (ORDER BY "_value") '
            f"FROM ({inner}) AS t"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            count, value = cursor.fetchone()
        return _days(value) if count >= min_rows else None
    values = [_days(v) for v in queryset.values_list("_value", flat=True)]
    return percentile(values, pct) if len(values) >= min_rows else None


def percentile(values, pct):
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    values = sorted(values)
    if not values:
        return None
    position = (len(values) - 1) * Decimal(pct) / 100
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def compute(
    grain, periods, measures, spend, now, computed_at, customers=True, pipeline=True, slices=None
):
    kpis = CompanyKpis(grain, periods, measures, spend, now, computed_at, slices)
    return kpis.compute(customers, pipeline)


def medians_only(grain, periods, measures, now, computed_at):
    return CompanyKpis(grain, periods, measures, {}, now, computed_at).medians_only()


#: The KPIs read from the customer timeline (``company_only``): only the won deals
#: (their company, moment and value) move them of all a deal's changes; churn dates,
#: spend and sales cost mark every slice of their days.
CUSTOMER_KPIS = ("cac", "sales_cost_ratio_pct", "churn_pct", "repeat_customer_pct", "clv")


#: The company-level KPIs ``medians_only`` computes.
MEDIAN_KPIS = ("sales_cycle_days_median",)


#: The KPIs ``pipeline_only`` computes, refreshed for every period each hour: of a
#: deal's changes, only those of the open pipeline (the ``pipeline`` family) and of the
#: won value (coverage's gap to target) move them.
PIPELINE_KPIS = ("weighted_pipeline", "pipeline_coverage")


def pipeline_only(grain, periods, measures, now, computed_at):
    return CompanyKpis(grain, periods, measures, {}, now, computed_at).pipeline_only()
