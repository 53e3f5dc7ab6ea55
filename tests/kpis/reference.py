"""A deliberately naive reference implementation of every KPI in docs/kpis.md.

It exists to check the real engine (set-based SQL) in a property test, so it is written
straight from docs/kpis.md and domain.md, independently of the engine: every row is
loaded into memory with the ORM and each KPI is a plain Python loop over deals. Clarity
over speed; no SQL aggregation anywhere.

``reference_kpis(grain, period_start, slice_key, breakdown, now)`` returns
``{code: (value, numerator, denominator)}`` for every code that applies to that slice
and breakdown. Conventions (docs/kpis.md, "Common rules"):

- percentages: ``value = numerator / denominator * 100``;
- means: ``numerator`` = the sum, ``denominator`` = the count, ``value`` = their ratio;
- counts and sums: ``value = numerator``, ``denominator = None``;
- medians: ``value`` = the median, numerator and denominator ``None``;
- a zero denominator gives ``value = None`` (numerator and denominator still reported).

Where docs/kpis.md left room, this reference chose (the engine should agree or say why):

- Days are exact fractions (seconds / 86400); ``proforma_payment_days`` counts calendar
  days from the issue date to the local date of ``paid_at``.
- "The 12 months before t" is ``[t - 12 calendar months, t)`` in local wall time (the
  day clamped: 29 Feb -> 28 Feb), not 365 days.
- Company-level KPIs exist in the company slice only, except ``target_attainment_pct``
  (company, team, rep): see ``COMPANY_LEVEL_SLICES``.
- "now" KPIs (``now_codes()``) are returned only for the period that contains ``now``.
- ``cpl`` with no spend: ``(None, 0, leads)``; ``cost_per_opportunity`` and
  ``channel_roi_pct`` only lose their value on a zero denominator (so a channel with
  opportunities and no spend has a cost per opportunity of 0).
- A breakdown returns only the codes it applies to, even when they count nothing;
  ``dropoff_closing_pct`` exists (deals lost at closing / deals that reached it).
- ``stalled_deals``: the latest stage change is the latest StageHistory row of the deal
  (moves, skips, reopenings); "older than the limit" is strictly greater; the default
  limit is twice the median stay in the stage over all deals (not the slice) whose
  stay ended in the 12 months before now; no limit (no setting, no stays) -> not stalled.
- Stage probability is measured over all deals; an open opportunity whose stage has
  neither 20 closed deals nor a ``StageSetting`` adds nothing to ``weighted_pipeline``.
- ``pipeline_velocity``: numerator N x W x S, denominator C.
- ``pipeline_coverage``: numerator the expected open value, denominator target minus
  revenue won so far (``None`` without a target); no value when that is <= 0.
- Targets: a quarter or year without its own target adds up its months' targets (the
  ``kpis.models.Target`` docstring); ``quota_attainment_pct`` counts reps with a target.
- ``forecast_accuracy_pct``: numerator the forecast, denominator the actual revenue;
  the committed forecast is the latest entered before the period's first moment, else
  the frozen one; none -> ``(None, None, revenue)``.
- Customer active at a period boundary ``t`` (a local midnight of day ``d``): won a deal
  in the 12 months before ``t`` and ``churned_at`` is empty or not before ``d`` (a
  customer that churned on the first day of a period was active at its start).
- ``clv``: numerator the won value, in the 12 months before P's end, of the customers
  active at P's end, per such customer, denominator the annual churn as a fraction; churn 0 -> no value.
- Sales cost is prorated by days like spend; the company's includes team rows.

The module also holds the hypothesis strategy ``deal_scripts()`` and ``build_dataset()``
that turn generated scripts into deals through the domain functions, for the property
test that compares the engine with this reference.
"""

import calendar
import datetime
import os
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.utils import timezone

from accounts.models import Role, Team, User
from funnel.models import (
    Activity,
    ActivityKind,
    ClosingDocument,
    Company,
    Deal,
    DocumentType,
    MarketingSpend,
    NegotiationRound,
    Offer,
    OfferStatus,
    SalesCost,
    StageHistory,
)
from funnel.stages import ORDER, Stage, Status
from kpis.periods import Period, next_start, tz

ZERO = Decimal(0)
HUNDRED = Decimal(100)
SECONDS_PER_DAY = Decimal(86400)

Result = tuple[Decimal | None, Decimal | None, Decimal | None]

#: Activities that count as needs work (docs/kpis.md, "Needs activities").
NEEDS_KINDS = (ActivityKind.MEETING, ActivityKind.AUDIT, ActivityKind.CALL)

#: Stages that can be skipped (``skipped_<S>_pct`` exists for them).
SKIPPABLE = (Stage.QUALIFICATION, Stage.NEEDS, Stage.OFFER, Stage.NEGOTIATION)

#: Codes that have breakdowns, and the breakdown kinds each accepts.
QUALIFICATION_BREAKDOWNS = {
    "source": "heard_from",
    "prompt": "contact_prompt",
    "scope": "product_scope",
    "industry": "industry",
    "segment": "segment",
}
LOST_BREAKDOWNS = ("reason", "stage")

#: Spend-based KPIs: company and channel slices only.
SPEND_CODES = ("cpl", "cost_per_opportunity", "channel_roi_pct")

#: Company-level KPIs and the slice kinds they exist in. docs/kpis.md: "company-level
#: KPIs only where stated"; only target_attainment_pct states more than the company.
#: **Choice**: everything else is company-only (see the report / module notes).
COMPANY_LEVEL_SLICES = {
    "revenue": {"company"},
    "revenue_growth_pct": {"company"},
    "avg_deal_size": {"company"},
    "sales_cycle_days": {"company"},
    "sales_cycle_days_median": {"company"},
    "weighted_pipeline": {"company"},
    "pipeline_velocity": {"company"},
    "pipeline_coverage": {"company"},
    "quota_attainment_pct": {"company"},
    "target_attainment_pct": {"company", "team", "rep"},
    "rep_productivity": {"company"},
    "new_leads_per_rep": {"company"},
    "cac": {"company"},
    "sales_cost_ratio_pct": {"company"},
    "forecast_accuracy_pct": {"company"},
    "clv": {"company"},
    "churn_pct": {"company"},
    "repeat_customer_pct": {"company"},
    "calls_per_rep": {"company"},
    "emails_per_rep": {"company"},
    "meetings_per_rep": {"company"},
}


def now_codes() -> tuple[str, ...]:
    """The "now" KPIs: only returned for the period that contains ``now``."""
    return (
        "stalled_deals",
        *(f"open_deals_{s.value}" for s in ORDER),
        *(f"open_value_{s.value}" for s in ORDER),
    )


# Small arithmetic helpers ---------------------------------------------------------------


def days_between(a: datetime.datetime, b: datetime.datetime) -> Decimal:
    """Exact fractional days from ``a`` to ``b``."""
    return Decimal(str((b - a).total_seconds())) / SECONDS_PER_DAY


def count_result(n) -> Result:
    n = Decimal(n)
    return (n, n, None)


def sum_result(values) -> Result:
    total = ZERO
    for v in values:
        if v is not None:
            total += v
    return (total, total, None)


def ratio_result(numerator, denominator, scale=None) -> Result:
    numerator = Decimal(numerator)
    denominator = Decimal(denominator)
    if denominator == 0:
        return (None, numerator, denominator)
    value = numerator / denominator
    if scale is not None:
        value = value * scale
    return (value, numerator, denominator)


def pct_result(numerator, denominator) -> Result:
    return ratio_result(numerator, denominator, HUNDRED)


def mean_result(values) -> Result:
    values = list(values)
    return ratio_result(sum(values, ZERO), len(values))


def median_result(values) -> Result:
    values = sorted(values)
    if not values:
        return (None, None, None)
    middle = len(values) // 2
    if len(values) % 2:
        return (values[middle], None, None)
    return ((values[middle - 1] + values[middle]) / 2, None, None)


def months_before(moment: datetime.datetime, months: int = 12) -> datetime.datetime:
    """The same local wall-clock moment ``months`` calendar months earlier (the day is
    clamped to the month's length: 29 Feb -> 28 Feb)."""
    local = moment.astimezone(tz())
    index = local.year * 12 + (local.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    return local.replace(year=year, month=month, day=day)


def local_day(moment: datetime.datetime) -> datetime.date:
    return moment.astimezone(tz()).date()


# The data, loaded once per call ---------------------------------------------------------


@dataclass
class Data:
    deals: list
    users: dict
    teams: dict
    companies: dict
    offers: dict  # deal id -> [Offer] by version
    rounds: dict  # deal id -> [NegotiationRound]
    activities: dict  # deal id -> [Activity]
    documents: dict  # deal id -> ClosingDocument
    history: dict  # deal id -> [StageHistory]
    spend_rows: list
    sales_cost_rows: list
    targets: list = field(default_factory=list)
    forecasts: list = field(default_factory=list)
    stage_settings: dict = field(default_factory=dict)

    # Per-deal facts, straight from domain.md ----------------------------------------

    def stamp(self, deal, stage):
        return getattr(deal, f"entered_{Stage(stage).value}_at")

    def skipped(self, deal, stage) -> bool:
        """Stage ``stage`` was passed by a skip: its stamp equals the next stage's."""
        stage = Stage(stage)
        if stage not in SKIPPABLE:
            return False
        nxt = ORDER[ORDER.index(stage) + 1]
        here, there = self.stamp(deal, stage), self.stamp(deal, nxt)
        return here is not None and there is not None and here == there

    def sent_offers(self, deal):
        return [o for o in self.offers[deal.id] if o.sent_at is not None]

    def first_sent_offer(self, deal):
        sent = self.sent_offers(deal)
        return min(sent, key=lambda o: (o.sent_at, o.version)) if sent else None

    def final_value(self, deal):
        document = self.documents.get(deal.id)
        return document.final_value_base if document is not None else None

    def current_value(self, deal):
        """Final value if won; else agreed value; else the latest sent offer's value;
        else the estimated value (base currency)."""
        if deal.status == Status.WON:
            return self.final_value(deal)
        if deal.agreed_value_base is not None:
            return deal.agreed_value_base
        sent = self.sent_offers(deal)
        if sent:
            return max(sent, key=lambda o: o.version).value_base
        return deal.estimated_value_base

    def is_lost_at(self, deal, stage) -> bool:
        return deal.status == Status.LOST and deal.lost_stage == Stage(stage).value

    def stay_end(self, deal, stage):
        """When ``deal`` left ``stage``: the next stamp, ``lost_at`` when lost there,
        ``won_at`` for closing; None while the stay is open."""
        stage = Stage(stage)
        if stage != Stage.CLOSING:
            nxt = self.stamp(deal, ORDER[ORDER.index(stage) + 1])
            if nxt is not None:
                return nxt
        elif deal.won_at is not None:
            return deal.won_at
        if self.is_lost_at(deal, stage):
            return deal.lost_at
        return None

    def stays(self, deals, stage):
        """[(leaving moment, days)] of the real (not skipped, not open) stays in ``stage``."""
        out = []
        for deal in deals:
            start = self.stamp(deal, stage)
            if start is None or self.skipped(deal, stage):
                continue
            end = self.stay_end(deal, stage)
            if end is not None:
                out.append((end, days_between(start, end)))
        return out

    # Spend and cost --------------------------------------------------------------------

    @staticmethod
    def prorated(rows, period: Period) -> Decimal:
        """Sum of amount_base(m) * days(P & m) / days(m) over monthly rows."""
        total = ZERO
        for row in rows:
            month_start = row.month
            month_end = next_start("month", month_start)
            overlap = (min(period.end, month_end) - max(period.start, month_start)).days
            if overlap > 0:
                month_days = (month_end - month_start).days
                total += row.amount_base * Decimal(overlap) / Decimal(month_days)
        return total

    def spend(self, period: Period, channel_id=None) -> Decimal:
        rows = [r for r in self.spend_rows if channel_id is None or r.channel_id == channel_id]
        return self.prorated(rows, period)

    def sales_cost(self, period: Period) -> Decimal:
        return self.prorated(self.sales_cost_rows, period)


def load() -> Data:
    """Every row the KPIs read, into memory."""
    deals = list(Deal.objects.select_related("lost_reason").order_by("id"))
    offers = defaultdict(list)
    for offer in Offer.objects.order_by("deal_id", "version"):
        offers[offer.deal_id].append(offer)
    rounds = defaultdict(list)
    for r in NegotiationRound.objects.order_by("deal_id", "number"):
        rounds[r.deal_id].append(r)
    activities = defaultdict(list)
    for a in Activity.objects.order_by("held_at", "id"):
        activities[a.deal_id].append(a)
    history = defaultdict(list)
    for h in StageHistory.objects.order_by("at", "id"):
        history[h.deal_id].append(h)
    data = Data(
        deals=deals,
        users={u.id: u for u in User.objects.all()},
        teams={t.id: t for t in Team.objects.all()},
        companies={c.id: c for c in Company.objects.all()},
        offers=offers,
        rounds=rounds,
        activities=activities,
        documents={d.deal_id: d for d in ClosingDocument.objects.all()},
        history=history,
        spend_rows=list(MarketingSpend.objects.all()),
        sales_cost_rows=list(SalesCost.objects.all()),
    )
    # Company-level settings live in kpis.models (imported lazily: they may not exist yet).
    try:
        from kpis.models import Target

        data.targets = list(Target.objects.all())
    except ImportError:
        pass
    try:
        from kpis.models import Forecast

        data.forecasts = list(Forecast.objects.all())
    except ImportError:
        pass
    try:
        from kpis.models import StageSetting

        data.stage_settings = {s.stage: s for s in StageSetting.objects.all()}
    except ImportError:
        pass
    return data


# Slices and breakdowns ------------------------------------------------------------------


def parse_slice(slice_key: str) -> tuple[str, str]:
    kind, _, arg = slice_key.partition(":")
    if kind not in ("company", "team", "rep", "channel", "segment", "industry"):
        raise ValueError(f"unknown slice {slice_key!r}")
    return kind, arg


def in_slice(data: Data, deal, kind: str, arg: str) -> bool:
    if kind == "company":
        return True
    if kind == "team":
        return data.users[deal.owner_id].team_id == int(arg)
    if kind == "rep":
        return deal.owner_id == int(arg)
    if kind == "channel":
        return deal.channel_id == int(arg)
    if kind == "segment":
        return deal.segment != "" and deal.segment == arg
    if kind == "industry":
        return deal.industry != "" and deal.industry == arg
    raise ValueError(kind)


# The KPIs ---------------------------------------------------------------------------------


def reference_kpis(
    grain: str,
    period_start: datetime.date,
    slice_key: str = "company",
    breakdown: str = "",
    now: datetime.datetime | None = None,
    data: "Data | None" = None,
) -> dict[str, Result]:
    now = now or timezone.now()
    period = Period(grain, period_start)
    data = data or load()
    kind, arg = parse_slice(slice_key)
    deals = [d for d in data.deals if in_slice(data, d, kind, arg)]

    if breakdown:
        return breakdown_kpis(data, deals, period, breakdown)

    out: dict[str, Result] = {}
    out.update(lead_kpis(data, deals, period))
    out.update(qualification_kpis(data, deals, period))
    out.update(needs_kpis(data, deals, period))
    out.update(offer_kpis(data, deals, period))
    out.update(negotiation_kpis(data, deals, period))
    out.update(closing_kpis(data, deals, period))
    out.update(funnel_kpis(data, deals, period))
    if period.contains(now):
        out.update(now_kpis(data, deals, now))
    if kind in ("company", "channel"):
        out.update(spend_kpis(data, deals, period, int(arg) if kind == "channel" else None))
    company = company_kpis(data, deals, period, kind, arg, now)
    out.update({code: r for code, r in company.items() if kind in COMPANY_LEVEL_SLICES[code]})
    return out


def _in(period: Period):
    start, end = period.start_at, period.end_at
    return lambda moment: moment is not None and start <= moment < end


def breakdown_kpis(data, deals, period, breakdown) -> dict[str, Result]:
    """``leads`` / ``lead_quality_pct`` by qualification answer, ``lost_reasons`` /
    ``lost_reasons_value`` by reason and lost stage. Other codes have no breakdowns."""
    kind, _, value = breakdown.partition(":")
    inside = _in(period)
    if kind in QUALIFICATION_BREAKDOWNS:
        attr = QUALIFICATION_BREAKDOWNS[kind]
        # Empty answers are left out of breakdowns.
        cohort = [
            d
            for d in deals
            if inside(d.entered_lead_at) and getattr(d, attr) != "" and getattr(d, attr) == value
        ]
        qualified = [d for d in cohort if d.entered_needs_at is not None]
        return {
            "leads": count_result(len(cohort)),
            "lead_quality_pct": pct_result(len(qualified), len(cohort)),
        }
    if kind in LOST_BREAKDOWNS:
        lost = [d for d in deals if d.status == Status.LOST and inside(d.lost_at)]
        if kind == "reason":
            lost = [d for d in lost if d.lost_reason.code == value]
        else:
            lost = [d for d in lost if d.lost_stage == value]
        return {
            "lost_reasons": count_result(len(lost)),
            "lost_reasons_value": sum_result(data.current_value(d) for d in lost),
        }
    return {}


def lead_kpis(data, deals, period):
    inside = _in(period)
    leads = [d for d in deals if inside(d.entered_lead_at)]
    return {
        "leads": count_result(len(leads)),
        "lead_acquisition_days": mean_result(
            days_between(d.first_touch_at, d.entered_lead_at)
            for d in leads
            if d.first_touch_at is not None
        ),
    }


def spend_kpis(data, deals, period, channel_id):
    """cpl, cost_per_opportunity, channel_roi_pct: company (all spend) or one channel."""
    inside = _in(period)
    spend = data.spend(period, channel_id)
    leads = [d for d in deals if inside(d.entered_lead_at)]
    opportunities = [d for d in deals if inside(d.entered_needs_at)]
    won_value = sum((data.current_value(d) or ZERO for d in leads if d.status == Status.WON), ZERO)
    cpl = ratio_result(spend, len(leads))
    if spend == 0:
        # "No value when spend is 0 or missing" (a channel without spend has no CPL).
        cpl = (None, spend, Decimal(len(leads)))
    return {
        "cpl": cpl,
        "cost_per_opportunity": ratio_result(spend, len(opportunities)),
        "channel_roi_pct": pct_result(won_value, spend),
    }


def qualification_kpis(data, deals, period):
    inside = _in(period)
    leads = [d for d in deals if inside(d.entered_lead_at)]
    entered_needs = [d for d in deals if inside(d.entered_needs_at)]
    return {
        "qualified_leads": count_result(len(entered_needs)),
        "lead_quality_pct": pct_result(
            len([d for d in leads if d.entered_needs_at is not None]), len(leads)
        ),
        "time_to_qualify_days": mean_result(
            days_between(d.entered_lead_at, d.entered_needs_at) for d in entered_needs
        ),
    }


def needs_kpis(data, deals, period):
    inside = _in(period)
    meetings = 0
    cohort = []
    for deal in deals:
        held = [a.held_at for a in data.activities[deal.id] if a.kind in NEEDS_KINDS]
        meetings += len([h for h in held if inside(h)])
        if held and inside(min(held)):
            cohort.append(deal)
    return {
        "needs_meetings": count_result(meetings),
        "meeting_conversion_pct": pct_result(
            len([d for d in cohort if d.entered_offer_at is not None]), len(cohort)
        ),
        "pipeline_created": sum_result(
            data.current_value(d) for d in deals if inside(d.entered_needs_at)
        ),
    }


def offer_kpis(data, deals, period):
    """Stage 4; deals that skipped ``offer`` are left out of every offer KPI."""
    inside = _in(period)
    deals = [d for d in deals if not data.skipped(d, Stage.OFFER)]

    sent_in_period = [o for d in deals for o in data.sent_offers(d) if inside(o.sent_at)]

    cohort, accepted = 0, 0
    first_values = []
    for deal in deals:
        first = data.first_sent_offer(deal)
        if first is None or not inside(first.sent_at):
            continue
        cohort += 1
        first_values.append(first.value_base)
        if any(o.status == OfferStatus.ACCEPTED for o in data.offers[deal.id]):
            accepted += 1

    versions, left = 0, 0
    for deal in deals:
        if deal.entered_negotiation_at is not None:
            leaving = deal.entered_negotiation_at
        elif data.is_lost_at(deal, Stage.OFFER):
            leaving = deal.lost_at
        else:
            continue
        if inside(leaving):
            left += 1
            versions += len([o for o in data.sent_offers(deal) if o.sent_at <= leaving])

    turnaround = []
    for deal in deals:
        sent = data.sent_offers(deal)
        negotiation = deal.entered_negotiation_at
        latest_before = None
        if negotiation is not None:
            before = [o for o in sent if o.sent_at <= negotiation]
            if before:
                latest_before = max(before, key=lambda o: (o.sent_at, o.version))
        for offer in sent:
            if offer.responded_at is not None:
                response = offer.responded_at
            elif latest_before is not None and offer.pk == latest_before.pk:
                response = negotiation
            else:
                continue
            if inside(response):
                turnaround.append(days_between(offer.sent_at, response))

    return {
        "offers_sent": count_result(len(sent_in_period)),
        "offer_prep_days": mean_result(
            days_between(o.prep_started_at, o.sent_at) for o in sent_in_period
        ),
        "offer_acceptance_pct": pct_result(accepted, cohort),
        "avg_offer_value": mean_result(first_values),
        "offer_versions_per_deal": ratio_result(versions, left),
        "offer_turnaround_days": mean_result(turnaround),
    }


def negotiation_kpis(data, deals, period):
    inside = _in(period)
    durations, rounds, successes = [], 0, 0
    for deal in deals:
        if deal.entered_negotiation_at is None or data.skipped(deal, Stage.NEGOTIATION):
            continue  # "A deal that skipped negotiation had none."
        if deal.entered_closing_at is not None:
            conclusion, success = deal.entered_closing_at, True
        elif data.is_lost_at(deal, Stage.NEGOTIATION):
            conclusion, success = deal.lost_at, False
        else:
            continue
        if not inside(conclusion):
            continue
        durations.append(days_between(deal.entered_negotiation_at, conclusion))
        rounds += len(data.rounds[deal.id])
        successes += int(success)

    closing = [d for d in deals if inside(d.entered_closing_at)]
    agreed_sum, first_sum = ZERO, ZERO
    for deal in closing:
        first = data.first_sent_offer(deal)
        if deal.agreed_value_base is not None and first is not None:
            agreed_sum += deal.agreed_value_base
            first_sum += first.value_base
    return {
        "negotiation_days": mean_result(durations),
        "negotiation_rounds": ratio_result(rounds, len(durations)),
        "negotiation_success_pct": pct_result(successes, len(durations)),
        "avg_discount_pct": mean_result(
            d.discount_pct for d in closing if d.discount_pct is not None
        ),
        "offer_value_retention_pct": pct_result(agreed_sum, first_sum),
    }


def closing_kpis(data, deals, period):
    inside = _in(period)
    leads = [d for d in deals if inside(d.entered_lead_at)]
    opportunities = [d for d in deals if inside(d.entered_needs_at)]
    won = [d for d in deals if d.status == Status.WON and inside(d.won_at)]
    lost = [d for d in deals if d.status == Status.LOST and inside(d.lost_at)]
    won_opportunities = [d for d in won if d.entered_needs_at is not None]
    lost_opportunities = [d for d in lost if d.entered_needs_at is not None]
    to_close = [days_between(d.entered_lead_at, d.won_at) for d in won]
    payment = []
    for deal in won:
        document = data.documents.get(deal.id)
        if (
            document is not None
            and document.document_type == DocumentType.PROFORMA
            and document.paid_at is not None
        ):
            payment.append(Decimal((local_day(document.paid_at) - document.issue_date).days))
    return {
        "sales_conversion_pct": pct_result(
            len([d for d in leads if d.status == Status.WON]), len(leads)
        ),
        "opportunity_conversion_pct": pct_result(
            len([d for d in opportunities if d.status == Status.WON]), len(opportunities)
        ),
        "win_rate_pct": pct_result(
            len(won_opportunities), len(won_opportunities) + len(lost_opportunities)
        ),
        "days_to_close": mean_result(to_close),
        "days_to_close_median": median_result(to_close),
        "won_value": sum_result(data.final_value(d) for d in won),
        "lost_value": sum_result(data.current_value(d) for d in lost_opportunities),
        "lost_reasons": count_result(len(lost)),
        "lost_reasons_value": sum_result(data.current_value(d) for d in lost),
        "proforma_payment_days": mean_result(payment),
    }


def funnel_kpis(data, deals, period):
    inside = _in(period)
    out = {}
    for i, stage in enumerate(ORDER):
        s = stage.value
        reached = [d for d in deals if inside(data.stamp(d, stage))]
        if i + 1 < len(ORDER):
            nxt = ORDER[i + 1]
            out[f"conversion_{s}_{nxt.value}_pct"] = pct_result(
                len([d for d in reached if data.stamp(d, nxt) is not None]), len(reached)
            )
        out[f"dropoff_{s}_pct"] = pct_result(
            len([d for d in reached if data.is_lost_at(d, stage)]), len(reached)
        )
        stays = [days for end, days in data.stays(deals, stage) if inside(end)]
        out[f"time_in_{s}_days"] = mean_result(stays)
        out[f"time_in_{s}_days_median"] = median_result(stays)
        if stage in SKIPPABLE:
            out[f"skipped_{s}_pct"] = pct_result(
                len([d for d in reached if data.skipped(d, stage)]), len(reached)
            )
    return out


def stall_limit(data, stage, now) -> Decimal | None:
    """The admin's limit for ``stage``, else twice the median stay in it over the trailing
    12 months (stays of all deals, company-wide, that ended in [now - 12 months, now))."""
    setting = data.stage_settings.get(Stage(stage).value)
    if setting is not None and setting.stall_limit_days is not None:
        return Decimal(setting.stall_limit_days)
    since = months_before(now)
    stays = [days for end, days in data.stays(data.deals, stage) if since <= end < now]
    median = median_result(stays)[0]
    return None if median is None else 2 * median


def now_kpis(data, deals, now):
    out = {}
    open_deals = [d for d in deals if d.status == Status.OPEN]
    for stage in ORDER:
        here = [d for d in open_deals if d.stage == stage.value]
        out[f"open_deals_{stage.value}"] = count_result(len(here))
        out[f"open_value_{stage.value}"] = sum_result(data.current_value(d) for d in here)
    stalled = 0
    limits = {stage.value: stall_limit(data, stage, now) for stage in ORDER}
    for deal in open_deals:
        limit = limits[deal.stage]
        if limit is None:
            continue
        moments = [h.at for h in data.history[deal.id] if h.at <= now]
        moments += [a.held_at for a in data.activities[deal.id] if a.held_at <= now]
        latest = max(moments) if moments else deal.entered_lead_at
        if days_between(latest, now) > limit:
            stalled += 1
    out["stalled_deals"] = count_result(stalled)
    return out


# Company level ----------------------------------------------------------------------------


def revenue(data, deals, start, end) -> Decimal:
    """Σ final value of deals won in [start, end)."""
    return sum(
        (
            data.final_value(d) or ZERO
            for d in deals
            if d.status == Status.WON and start <= d.won_at < end
        ),
        ZERO,
    )


def won_in(deals, start, end):
    return [d for d in deals if d.status == Status.WON and start <= d.won_at < end]


def active_reps(data, deals, period) -> set:
    """Users with the rep role owning a deal open at some moment of the period: created
    before its end, not won or lost before its start."""
    reps = set()
    for deal in deals:
        if deal.entered_lead_at >= period.end_at:
            continue
        if deal.won_at is not None and deal.won_at < period.start_at:
            continue
        if deal.lost_at is not None and deal.lost_at < period.start_at:
            continue
        if data.users[deal.owner_id].role == Role.REP:
            reps.add(deal.owner_id)
    return reps


def target_amount(data, grain, start, *, team_id=None, rep_id=None) -> Decimal | None:
    """The target of one scope (company: no team, no rep) for the period. A quarter or
    a year with no target of its own adds up its months' targets (kpis.models.Target)."""
    rows = [
        t
        for t in data.targets
        if t.grain == grain
        and t.period_start == start
        and t.team_id == team_id
        and t.rep_id == rep_id
    ]
    if rows:
        return sum((t.amount for t in rows), ZERO)
    if grain in ("quarter", "year"):
        end = next_start(grain, start)
        months = [
            t
            for t in data.targets
            if t.grain == "month"
            and start <= t.period_start < end
            and t.team_id == team_id
            and t.rep_id == rep_id
        ]
        if months:
            return sum((t.amount for t in months), ZERO)
    return None


def customer_is_active(data, company_id, moment) -> bool:
    """Won a deal in the 12 months before ``moment`` (a local midnight) and not churned
    on or before the day that ends at ``moment``."""
    company = data.companies[company_id]
    if company.churned_at is not None and company.churned_at < local_day(moment):
        return False
    since = months_before(moment)
    return any(
        d.company_id == company_id and d.status == Status.WON and since <= d.won_at < moment
        for d in data.deals
    )


def active_customers(data, moment) -> set:
    customers = {d.company_id for d in data.deals if d.status == Status.WON}
    return {c for c in customers if customer_is_active(data, c, moment)}


def stage_probability(data, stage, now) -> Decimal | None:
    """Of deals that entered ``stage`` in the 12 months before now, the share won; the
    admin's default while fewer than 20 of them are closed."""
    since = months_before(now)
    reached = [
        d
        for d in data.deals
        if data.stamp(d, stage) is not None and since <= data.stamp(d, stage) < now
    ]
    closed = [d for d in reached if d.status in (Status.WON, Status.LOST)]
    if len(closed) >= 20:
        won = [d for d in reached if d.status == Status.WON]
        return Decimal(len(won)) / Decimal(len(reached))
    setting = data.stage_settings.get(Stage(stage).value)
    if setting is None:
        return None
    return setting.default_probability_pct / HUNDRED


def company_kpis(data, deals, period, kind, arg, now):
    out = {}
    inside = _in(period)
    start, end = period.start_at, period.end_at
    all_deals = data.deals

    # Revenue, growth, deal size, cycle.
    rev = revenue(data, deals, start, end)
    previous = period.previous()
    prev_rev = revenue(data, deals, previous.start_at, previous.end_at)
    won = won_in(deals, start, end)
    cycle = [days_between(d.entered_needs_at, d.won_at) for d in won]
    out["revenue"] = (rev, rev, None)
    out["revenue_growth_pct"] = pct_result(rev - prev_rev, prev_rev)
    out["avg_deal_size"] = ratio_result(rev, len(won))
    out["sales_cycle_days"] = mean_result(cycle)
    out["sales_cycle_days_median"] = median_result(cycle)

    # Pipeline: open opportunities by expected close date in the period.
    expected = [
        d
        for d in deals
        if d.status == Status.OPEN
        and d.entered_needs_at is not None
        and d.expected_close_date is not None
        and period.start <= d.expected_close_date < period.end
    ]
    weighted = ZERO
    probabilities = {}
    for deal in expected:
        if deal.stage not in probabilities:
            probabilities[deal.stage] = stage_probability(data, deal.stage, now)
        probability = probabilities[deal.stage]
        value = data.current_value(deal)
        if probability is not None and value is not None:
            weighted += value * probability
    out["weighted_pipeline"] = (weighted, weighted, None)

    # Pipeline velocity: N x W x S / C, W, S, C over the 12 months ending at P's start.
    open_at_start = [
        d
        for d in deals
        if d.entered_needs_at is not None
        and d.entered_needs_at < start
        and not (d.won_at is not None and d.won_at < start)
        and not (d.lost_at is not None and d.lost_at < start)
    ]
    since = months_before(start)
    window_won = [d for d in won_in(deals, since, start) if d.entered_needs_at is not None]
    window_lost = [
        d
        for d in deals
        if d.status == Status.LOST and d.entered_needs_at is not None and since <= d.lost_at < start
    ]
    w = pct_result(len(window_won), len(window_won) + len(window_lost))[0]
    s = ratio_result(revenue(data, deals, since, start), len(won_in(deals, since, start)))[0]
    c = mean_result(
        days_between(d.entered_needs_at, d.won_at) for d in won_in(deals, since, start)
    )[0]
    if w is None or s is None:
        out["pipeline_velocity"] = (None, None, c)
    else:
        top = Decimal(len(open_at_start)) * (w / HUNDRED) * s
        out["pipeline_velocity"] = (None if not c else top / c, top, c)

    # Targets.
    team_id = int(arg) if kind == "team" else None
    rep_id = int(arg) if kind == "rep" else None
    target = target_amount(data, period.grain, period.start, team_id=team_id, rep_id=rep_id)
    pipeline = sum((data.current_value(d) or ZERO for d in expected), ZERO)
    if target is None:
        out["pipeline_coverage"] = (None, pipeline, None)
        out["target_attainment_pct"] = (None, rev, None)
    else:
        gap = target - revenue(data, deals, start, min(end, now))
        out["pipeline_coverage"] = (pipeline / gap if gap > 0 else None, pipeline, gap)
        out["target_attainment_pct"] = pct_result(rev, target)

    # Reps with a target for the period (their own, or their months' for a quarter/year).
    rep_targets = {}
    for rep in sorted({t.rep_id for t in data.targets if t.rep_id is not None}):
        amount = target_amount(data, period.grain, period.start, rep_id=rep)
        if amount is not None:
            rep_targets[rep] = amount
    at_quota = 0
    for rep, amount in rep_targets.items():
        rep_deals = [d for d in all_deals if d.owner_id == rep]
        if revenue(data, rep_deals, start, end) >= amount:
            at_quota += 1
    out["quota_attainment_pct"] = pct_result(at_quota, len(rep_targets))

    # Per active rep.
    reps = len(active_reps(data, deals, period))
    leads = len([d for d in deals if inside(d.entered_lead_at)])
    activities = [a for d in deals for a in data.activities[d.id] if inside(a.held_at)]
    out["rep_productivity"] = ratio_result(rev, reps)
    out["new_leads_per_rep"] = ratio_result(leads, reps)
    out["calls_per_rep"] = ratio_result(
        len([a for a in activities if a.kind == ActivityKind.CALL]), reps
    )
    out["emails_per_rep"] = ratio_result(
        len([a for a in activities if a.kind == ActivityKind.EMAIL]), reps
    )
    out["meetings_per_rep"] = ratio_result(
        len([a for a in activities if a.kind in (ActivityKind.MEETING, ActivityKind.AUDIT)]),
        reps,
    )

    # Cost side (company): all marketing spend and all sales cost, prorated by days.
    cost = data.spend(period) + data.sales_cost(period)
    first_win = {}
    for deal in all_deals:
        if deal.status == Status.WON and (
            deal.company_id not in first_win or deal.won_at < first_win[deal.company_id]
        ):
            first_win[deal.company_id] = deal.won_at
    new_customers = len([c for c, moment in first_win.items() if inside(moment)])
    out["cac"] = ratio_result(cost, new_customers)
    out["sales_cost_ratio_pct"] = pct_result(cost, rev)

    # Forecast accuracy: the committed forecast entered before the period began, else the
    # frozen weighted pipeline.
    forecasts = [
        f
        for f in data.forecasts
        if f.grain == period.grain and f.period_start == period.start and f.team_id is None
    ]
    committed = [f for f in forecasts if f.kind == "committed" and f.entered_at < start]
    frozen = [f for f in forecasts if f.kind == "frozen"]
    chosen = max(committed or frozen, key=lambda f: f.entered_at) if (committed or frozen) else None
    if chosen is None:
        out["forecast_accuracy_pct"] = (None, None, rev)
    elif rev == 0:
        out["forecast_accuracy_pct"] = (None, chosen.amount, rev)
    else:
        accuracy = max(ZERO, 1 - abs(rev - chosen.amount) / rev) * HUNDRED
        out["forecast_accuracy_pct"] = (accuracy, chosen.amount, rev)

    # Customers.
    at_start = active_customers(data, start)
    at_end = active_customers(data, end)
    out["churn_pct"] = pct_result(len(at_start - at_end), len(at_start))

    year_ago = months_before(end)
    # "Mean won value per active customer": the won value of the customers active at
    # P's end (a churned customer's wins are not an active customer's value).
    year_value = revenue(data, [d for d in all_deals if d.company_id in at_end], year_ago, end)
    active_year_ago = active_customers(data, year_ago)
    annual_churn = ratio_result(len(active_year_ago - at_end), len(active_year_ago))[0]
    per_customer = ratio_result(year_value, len(at_end))[0]
    if per_customer is None or annual_churn is None:
        out["clv"] = (None, per_customer, annual_churn)
    else:
        out["clv"] = (
            per_customer / annual_churn if annual_churn else None,
            per_customer,
            annual_churn,
        )

    won_by_company = defaultdict(int)
    for deal in all_deals:
        if deal.status == Status.WON and deal.won_at < end:
            won_by_company[deal.company_id] += 1
    out["repeat_customer_pct"] = pct_result(
        len([c for c, n in won_by_company.items() if n >= 2]), len(won_by_company)
    )
    return out


# Generated datasets for the property test ------------------------------------------------
#
# ``deal_scripts()`` draws a small list of deal scripts; ``build_dataset(scripts, cast)``
# plays them through the domain functions. The strategy simulates the domain's rules as
# it draws, so every script is valid and the builder never raises: offers only from the
# offer stage on, a move into or past negotiation only after an offer was sent, closing
# only with agreed terms, a win only with a closing document, rounds only in
# negotiation, a reopen only of a lost deal.
# Moments are minutes from the start of a 120-day window that ends a few days before now,
# strictly increasing by at least a minute within a deal.

WINDOW_DAYS = 120
END_MARGIN_DAYS = 3
WINDOW_MINUTES = WINDOW_DAYS * 24 * 60
N_COMPANIES = 4
SEGMENTS = ("", "SMB", "Enterprise")
INDUSTRIES = ("", "IT", "Retail")
ANSWERS = ("", "fair", "web")
LOST_REASON_CODES = (
    "price",
    "competitor",
    "no_budget",
    "no_decision",
    "timing",
    "not_qualified",
    "no_response",
    "other",
)
STAGE_INDEX = {stage.value: i for i, stage in enumerate(ORDER)}
NEEDS_I, OFFER_I, NEGOTIATION_I, CLOSING_I = (
    STAGE_INDEX["needs"],
    STAGE_INDEX["offer"],
    STAGE_INDEX["negotiation"],
    STAGE_INDEX["closing"],
)


@dataclass(frozen=True)
class Step:
    minute: int  # from the window's start
    action: str  # move, start_offer, send_offer, accept, reject, round, agree, document,
    #              win, lose, reopen, activity
    stage: str = ""  # move: the target stage
    value: Decimal | None = None  # offer, round, agreed or final value
    discount: Decimal | None = None  # round or agreed discount %
    kind: str = ""  # activity kind, or document type
    reason: str = ""  # lost reason code


@dataclass(frozen=True)
class DealScript:
    owner: int  # index into cast["reps"]
    channel: int | None  # index into cast["channels"]
    company: int  # index among N_COMPANIES companies
    segment: str
    industry: str
    heard_from: str
    contact_prompt: str
    product_scope: str
    estimated_value: Decimal | None
    first_touch_minutes: int | None  # before the lead's creation
    expected_close_days: int | None  # after the lead's creation
    lead_minute: int
    steps: tuple[Step, ...] = ()


def _strategies():
    from hypothesis import strategies as st

    return st


def deal_script():
    st = _strategies()
    money = st.integers(10, 500).map(lambda n: Decimal(n * 100))
    discounts = st.sampled_from([None, Decimal(0), Decimal(5), Decimal("12.5"), Decimal(20)])
    gaps = st.one_of(
        st.integers(1, 59),  # minutes
        st.integers(60, 2 * 24 * 60),  # hours
        st.integers(24 * 60, 10 * 24 * 60),  # days
    )

    @st.composite
    def script(draw):
        lead_minute = draw(st.integers(0, WINDOW_MINUTES - 1))
        # A deal's fate steers its steps: "win" only progresses, "lose" is lost at a
        # drawn stage, "reopen" is lost there, reopened and goes on, "wander" draws
        # every step among all that are valid.
        fate = draw(st.sampled_from(["win", "lose", "reopen", "wander"]))
        lose_at = draw(st.integers(0, len(ORDER) - 1))
        stage, status, lost_once = 0, Status.OPEN, False
        versions, draft, latest_sent = 0, False, None
        any_sent, agreed, has_document = False, False, False
        steps = []
        minute = lead_minute
        for _ in range(draw(st.integers(0, 22))):
            minute += draw(gaps)
            if minute >= WINDOW_MINUTES:
                break
            targets = [
                j
                for j in range(stage + 1, len(ORDER))
                if (j < NEGOTIATION_I or any_sent) and (j != CLOSING_I or agreed)
            ]
            if fate in ("lose", "reopen") and not lost_once and stage >= lose_at:
                targets = []  # stays here until lost
            if status == Status.OPEN:
                # Progress first: hypothesis favours the first elements of a choice.
                options = []
                if stage == CLOSING_I:
                    options += ["win"] * 8 if has_document else ["document"] * 8
                if draft:
                    options += ["send_offer"] * 6
                if stage in (OFFER_I, NEGOTIATION_I) and versions < 2 and not draft:
                    options += ["start_offer"] * (5 if versions == 0 else 1)
                if targets:
                    options += ["move"] * 6
                if stage == NEGOTIATION_I:
                    options += ["agree"] * (1 if agreed else 3) + ["round", "round"]
                if stage == OFFER_I:
                    options += ["agree"]
                if latest_sent == OfferStatus.SENT:
                    options += ["accept", "accept", "reject"]
                options += ["activity", "activity"]
                if fate == "wander":
                    options += ["lose"]
                if fate in ("lose", "reopen") and not lost_once and stage >= lose_at:
                    # Lose here (work on the offer may go on meanwhile); no win before.
                    options = ["lose", "lose", *(o for o in options if o != "win")]
            elif status == Status.LOST:
                options = ["reopen", "activity"] if fate in ("reopen", "wander") else ["activity"]
            else:
                options = ["activity"]
            action = draw(st.sampled_from(options))
            step = {"minute": minute, "action": action}
            if action == "move":
                target = draw(st.sampled_from([targets[0]] * 4 + targets))
                step["stage"] = ORDER[target].value
                stage = target
            elif action == "start_offer":
                step["value"] = draw(money)
                versions, draft = versions + 1, True
            elif action == "send_offer":
                draft, latest_sent, any_sent = False, OfferStatus.SENT, True
            elif action in ("accept", "reject"):
                latest_sent = OfferStatus.ACCEPTED if action == "accept" else OfferStatus.REJECTED
                if action == "accept" and stage >= OFFER_I:
                    agreed = True
            elif action == "round":
                step["value"] = draw(money)
                step["discount"] = draw(st.sampled_from([Decimal(0), Decimal(5), Decimal(10)]))
            elif action == "agree":
                step["value"] = draw(money)
                step["discount"] = draw(discounts)
                agreed = True
            elif action == "document":
                step["kind"] = draw(st.sampled_from(DocumentType.values))
                step["value"] = draw(money)
                has_document = True
            elif action == "win":
                status = Status.WON
            elif action == "lose":
                lost_once = True
                reasons = (
                    ["not_qualified", "not_qualified", "no_response"]
                    if stage < NEEDS_I
                    else list(LOST_REASON_CODES)
                )
                step["reason"] = draw(st.sampled_from(reasons))
                status = Status.LOST
            elif action == "reopen":
                status = Status.OPEN
            elif action == "activity":
                step["kind"] = draw(st.sampled_from(ActivityKind.values))
            steps.append(Step(**step))
        return DealScript(
            owner=draw(st.integers(0, 2)),
            channel=draw(st.sampled_from([0, 0, 1, 1, None])),
            company=draw(st.integers(0, N_COMPANIES - 1)),
            segment=draw(st.sampled_from(SEGMENTS)),
            industry=draw(st.sampled_from(INDUSTRIES)),
            heard_from=draw(st.sampled_from(ANSWERS)),
            contact_prompt=draw(st.sampled_from(ANSWERS)),
            product_scope=draw(st.sampled_from(ANSWERS)),
            estimated_value=draw(st.one_of(st.none(), money)),
            first_touch_minutes=draw(st.one_of(st.none(), st.integers(0, 20 * 24 * 60))),
            expected_close_days=draw(st.one_of(st.none(), st.integers(0, 150))),
            lead_minute=lead_minute,
            steps=tuple(steps),
        )

    return script()


def property_examples() -> int:
    """Examples a property test runs by default (``LEJEK_PROPERTY_EXAMPLES``, 12)."""
    return int(os.environ.get("LEJEK_PROPERTY_EXAMPLES", "12"))


def property_settings(max_examples=None):
    """The hypothesis settings of a property test on datasets built by ``build_dataset``:
    ``max_examples`` (default ``property_examples()``); no deadline (a dataset is built
    through the domain functions); the database fixture shared by the examples (each
    rolls its dataset back); explicit and generated examples only, no shrinking."""
    from hypothesis import HealthCheck, Phase, settings

    return settings(
        max_examples=property_examples() if max_examples is None else max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        phases=[Phase.explicit, Phase.generate],
    )


def deal_scripts(max_size: int = 12):
    """A hypothesis strategy: a list of 0 to ``max_size`` valid deal scripts."""
    st = _strategies()
    return st.lists(deal_script(), min_size=0, max_size=max_size)


def make_cast() -> dict:
    """Two teams, a manager, three reps (two in the first team, one in the second) and
    two channels: what ``build_dataset`` expects in ``cast``."""
    from funnel.models import Channel

    team_a = Team.objects.create(name="Reference team A")
    team_b = Team.objects.create(name="Reference team B")
    manager = User.objects.create(username="reference-manager", role=Role.MANAGER, team=team_a)
    team_a.manager = manager
    team_a.save()
    reps = [
        User.objects.create(username="reference-rep-0", role=Role.REP, team=team_a),
        User.objects.create(username="reference-rep-1", role=Role.REP, team=team_a),
        User.objects.create(username="reference-rep-2", role=Role.REP, team=team_b),
    ]
    channels = [
        Channel.objects.create(name="Reference channel 0"),
        Channel.objects.create(name="Reference channel 1"),
    ]
    return {"teams": [team_a, team_b], "manager": manager, "reps": reps, "channels": channels}


def window_origin(now: datetime.datetime) -> datetime.datetime:
    """Minute 0 of the generated window."""
    origin = now - datetime.timedelta(days=WINDOW_DAYS + END_MARGIN_DAYS)
    return origin.replace(second=0, microsecond=0)


def build_dataset(scripts, cast, *, now=None, company_settings=True, pause=None, held=None) -> dict:
    """Play ``scripts`` through the domain functions; add monthly marketing spend and
    sales cost for every month of the window (and, when kpis.models has them, stage
    settings, targets and forecasts). Returns the window's origin and the deals made.

    With ``pause`` (a callable) the scripts are played in two parts: every deal is
    created and plays its first ``held[n]`` steps, the spend and settings are added,
    ``pause()`` is called, then every deal plays the rest of its steps."""
    from funnel import domain
    from funnel.models import LostReason

    now = now or timezone.now()
    origin = window_origin(now)

    def moment(minute):
        return origin + datetime.timedelta(minutes=minute)

    reps, channels, manager = cast["reps"], cast["channels"], cast["manager"]
    companies = []
    for i in range(N_COMPANIES):
        company, _ = Company.objects.get_or_create(name=f"Reference company {i}")
        companies.append(company)
    # The last company churned in the middle of the window.
    companies[-1].churned_at = local_day(moment(WINDOW_MINUTES // 2))
    companies[-1].save(update_fields=["churned_at"])
    reasons = {r.code: r for r in LostReason.objects.all()}

    deals, drafts, sent_offers = [], {}, {}

    def play(deal, script, steps):
        """Play ``steps`` of ``script`` on ``deal``; the draft and the sent offer a later
        step responds to are kept per deal (a script may be played in two parts)."""
        owner = reps[script.owner]
        for step in steps:
            at = moment(step.minute)
            if step.action == "move":
                domain.move_forward(deal, step.stage, by=owner, at=at)
            elif step.action == "start_offer":
                drafts[deal.pk] = domain.start_offer(deal, value=step.value, by=owner, at=at)
            elif step.action == "send_offer":
                sent_offers[deal.pk] = domain.send_offer(drafts.pop(deal.pk), by=owner, at=at)
            elif step.action == "accept":
                domain.accept_offer(sent_offers[deal.pk], by=owner, at=at)
            elif step.action == "reject":
                domain.reject_offer(sent_offers[deal.pk], by=owner, at=at)
            elif step.action == "round":
                domain.add_round(
                    deal,
                    held_at=at,
                    proposed_value=step.value,
                    discount_pct=step.discount,
                    by=owner,
                )
            elif step.action == "agree":
                domain.agree_terms(
                    deal, agreed_value=step.value, discount_pct=step.discount, by=owner, at=at
                )
            elif step.action == "document":
                domain.save_closing_document(
                    deal,
                    document_type=step.kind,
                    issue_date=local_day(at),
                    final_value=step.value,
                    number=f"D/{deal.pk}",
                    by=owner,
                )
            elif step.action == "win":
                domain.win(deal, by=owner, at=at)
            elif step.action == "lose":
                domain.mark_lost(deal, reasons[step.reason], by=owner, at=at)
            elif step.action == "reopen":
                domain.reopen(deal, by=manager, at=at)
            elif step.action == "activity":
                domain.log_activity(deal, kind=step.kind, held_at=at, by=owner)
            else:
                raise ValueError(step.action)
            # Offer responses and the terms they agree change the deal's row (and its
            # version) through another instance: read it again before the next step.
            deal.refresh_from_db()

    for n, script in enumerate(scripts):
        owner = reps[script.owner]
        lead_at = moment(script.lead_minute)
        deal = domain.create_deal(
            by=owner,
            owner=owner,
            company=companies[script.company],
            title=f"Generated deal {n}",
            at=lead_at,
            channel=channels[script.channel] if script.channel is not None else None,
            estimated_value=script.estimated_value,
            first_touch_at=(
                lead_at - datetime.timedelta(minutes=script.first_touch_minutes)
                if script.first_touch_minutes is not None
                else None
            ),
            expected_close_date=(
                local_day(lead_at) + datetime.timedelta(days=script.expected_close_days)
                if script.expected_close_days is not None
                else None
            ),
            segment=script.segment,
            industry=script.industry,
            heard_from=script.heard_from,
            contact_prompt=script.contact_prompt,
            product_scope=script.product_scope,
        )
        play(deal, script, script.steps if pause is None else script.steps[: held[n]])
        deals.append(deal)

    months = []
    month = local_day(origin).replace(day=1)
    while month <= local_day(now):
        months.append(month)
        month = next_start("month", month)
    for i, month in enumerate(months):
        amounts = [Decimal(1000 + 10 * i), Decimal(450 + i) if i % 2 else None]
        for channel, amount in zip(channels, amounts, strict=False):
            if amount is not None:
                MarketingSpend.objects.update_or_create(
                    channel=channel,
                    month=month,
                    defaults={"amount": amount, "amount_base": amount},
                )
        SalesCost.objects.create(month=month, amount=Decimal(2000), amount_base=Decimal(2000))
        SalesCost.objects.create(
            month=month, team=cast["teams"][0], amount=Decimal(300), amount_base=Decimal(300)
        )
    if company_settings:
        build_company_settings(cast, months, now)
    if pause is not None:
        pause()
        for n, (deal, script) in enumerate(zip(deals, scripts, strict=True)):
            play(deal, script, script.steps[held[n] :])
    return {"origin": origin, "now": now, "deals": deals, "months": months}


def build_company_settings(cast, months, now):
    """Stage settings, monthly targets (company, teams, the first two reps: the third has
    none) and forecasts (committed for even months, frozen for odd ones), when
    kpis.models defines them."""
    try:
        from kpis.models import Forecast, StageSetting, Target
    except ImportError:
        return
    probabilities = {
        "lead": 5,
        "qualification": 10,
        "needs": 20,
        "offer": 35,
        "negotiation": 60,
        "closing": 85,
    }
    for stage in ORDER:
        StageSetting.objects.update_or_create(
            stage=stage.value,
            defaults={
                "default_probability_pct": Decimal(probabilities[stage.value]),
                "stall_limit_days": 7 if stage == Stage.OFFER else None,
            },
        )
    for i, month in enumerate(months):
        scopes = [
            ({"team": None, "rep": None}, Decimal(40000)),
            ({"team": cast["teams"][0], "rep": None}, Decimal(25000)),
            ({"team": cast["teams"][1], "rep": None}, Decimal(15000)),
            ({"team": None, "rep": cast["reps"][0]}, Decimal(10000)),
            ({"team": None, "rep": cast["reps"][1]}, Decimal(5000)),
        ]
        for scope, amount in scopes:
            Target.objects.update_or_create(
                grain="month", period_start=month, **scope, defaults={"amount": amount}
            )
        start = datetime.datetime.combine(month, datetime.time.min, tzinfo=tz())
        if start > now:
            continue
        if i % 2 == 0:
            entered, kind = start - datetime.timedelta(days=2), "committed"
        else:
            entered, kind = start, "frozen"
        Forecast.objects.update_or_create(
            grain="month",
            period_start=month,
            team=None,
            kind=kind,
            defaults={"amount": Decimal(30000 + 1000 * i), "entered_at": entered},
        )
