"""The one registry of KPIs: every KPI of domain.md, with its label, unit, basis,
direction and formula. Reports, the API and exports read labels and formulas from here.

Stage and funnel KPIs are computed from the additive measures of a family
(kpis/families.py): ``value = numerator ÷ denominator × scale``, or a count or sum.
Company-level KPIs are computed by kpis/company.py from other KPIs and a few direct
queries. Exact definitions, including the choices where domain.md is ambiguous, are in
docs/kpis.md.
"""

from dataclasses import dataclass, field

from django.db.models import Q
from django.utils.functional import lazy
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from funnel import stages
from funnel.stages import Stage, Status

EVENT, COHORT, NOW = "event", "cohort", "now"
HIGHER, LOWER, NEUTRAL = 1, -1, 0

COUNT, MONEY, PCT, DAYS, RATIO, MONEY_PER_DAY = (
    "count",
    "money",
    "pct",
    "days",
    "ratio",
    "money_per_day",
)

ALL_SLICES = ("company", "team", "rep", "channel", "segment", "industry")
SPEND_SLICES = ("company", "channel")
COMPANY_ONLY = ("company",)
PEOPLE_SLICES = ("company", "team", "rep")


@dataclass(frozen=True)
class Kpi:
    code: str
    label: str
    unit: str
    basis: str
    direction: int
    formula: str
    stage: Stage | None = None
    family: str | None = None
    numerator: str | None = None  # measure of the family
    denominator: str | None = None
    scale: int = 1
    median: str | None = None  # measure whose median is the value
    slices: tuple = ALL_SLICES
    breakdowns: tuple = ()
    # Drill-down: which rows of the family are behind the numerator (None: all).
    numerator_rows: Q | None = None
    # Shown beside the value: measures of the family stored in ``extra``.
    extra: tuple = ()
    computed_by: str = "family"  # or "company"

    @property
    def is_cohort(self):
        return self.basis == COHORT


@dataclass
class Registry:
    kpis: dict = field(default_factory=dict)

    def add(self, kpi):
        if kpi.code in self.kpis:
            raise ValueError(f"KPI {kpi.code} registered twice")
        self.kpis[kpi.code] = kpi
        return kpi

    def __getitem__(self, code):
        return self.kpis[code]

    def __iter__(self):
        return iter(self.kpis.values())

    def __contains__(self, code):
        return code in self.kpis


KPIS = Registry()
add = KPIS.add


def _interpolate(message, params):
    return str(message) % {key: str(value) for key, value in params.items()}


# Labels with a stage name in them, translated when shown, not at import.
interpolate_lazy = lazy(_interpolate, str)

WON_Q = Q(status=Status.WON)

# Stage 1: lead -------------------------------------------------------------------------
add(
    Kpi(
        "leads",
        _("Leads"),
        COUNT,
        EVENT,
        HIGHER,
        _("Deals created"),
        stage=Stage.LEAD,
        family="lead",
        numerator="n",
        breakdowns=("source", "prompt", "scope", "industry", "segment"),
    )
)
add(
    Kpi(
        "cpl",
        _("Cost per lead"),
        MONEY,
        EVENT,
        LOWER,
        _("Marketing spend ÷ leads created (monthly spend prorated by days)"),
        stage=Stage.LEAD,
        family="lead",
        numerator="spend",
        denominator="n",
        slices=SPEND_SLICES,
        computed_by="spend",
    )
)
add(
    Kpi(
        "lead_acquisition_days",
        _("Lead acquisition time (days)"),
        DAYS,
        EVENT,
        LOWER,
        _("Mean days from the first marketing touch to the lead's creation"),
        stage=Stage.LEAD,
        family="lead",
        numerator="touch_days",
        denominator="touch_n",
        numerator_rows=Q(first_touch_at__isnull=False),
    )
)
add(
    Kpi(
        "cost_per_opportunity",
        _("Cost per opportunity"),
        MONEY,
        EVENT,
        LOWER,
        _("Marketing spend ÷ deals that entered needs"),
        stage=Stage.LEAD,
        family="needs",
        numerator="spend",
        denominator="n",
        slices=SPEND_SLICES,
        computed_by="spend",
    )
)
add(
    Kpi(
        "channel_roi_pct",
        _("Channel ROI %"),
        PCT,
        COHORT,
        HIGHER,
        _("Won value of the period's leads ÷ marketing spend × 100"),
        stage=Stage.LEAD,
        family="lead",
        numerator="won_value",
        denominator="spend",
        scale=100,
        slices=SPEND_SLICES,
        numerator_rows=WON_Q,
        computed_by="spend",
        # A cohort: how many of its leads are still open (domain.md).
        extra=("open",),
    )
)

# Stage 2: qualification ----------------------------------------------------------------
add(
    Kpi(
        "qualified_leads",
        _("Qualified leads"),
        COUNT,
        EVENT,
        HIGHER,
        _("Deals that entered needs"),
        stage=Stage.QUALIFICATION,
        family="needs",
        numerator="n",
    )
)
add(
    Kpi(
        "lead_quality_pct",
        _("Lead quality %"),
        PCT,
        COHORT,
        HIGHER,
        _("Leads created in the period that entered needs ÷ all leads created × 100"),
        stage=Stage.QUALIFICATION,
        family="lead",
        numerator="qualified",
        denominator="n",
        scale=100,
        numerator_rows=Q(entered_needs_at__isnull=False),
        extra=("open",),
        breakdowns=("source", "prompt", "scope", "industry", "segment"),
    )
)
add(
    Kpi(
        "time_to_qualify_days",
        _("Time to qualify (days)"),
        DAYS,
        EVENT,
        LOWER,
        _("Mean days from lead creation to entering needs"),
        stage=Stage.QUALIFICATION,
        family="needs",
        numerator="qualify_days",
        denominator="n",
    )
)

# Stage 3: needs ------------------------------------------------------------------------
add(
    Kpi(
        "needs_meetings",
        _("Meetings, audits and calls"),
        COUNT,
        EVENT,
        HIGHER,
        _("Meetings, audits and calls held"),
        stage=Stage.NEEDS,
        family="needs_activity",
        numerator="n",
    )
)
add(
    Kpi(
        "meeting_conversion_pct",
        _("Meeting conversion %"),
        PCT,
        COHORT,
        HIGHER,
        _(
            "Deals whose first meeting, audit or call was in the period that entered offer ÷ all × 100"
        ),
        stage=Stage.NEEDS,
        family="first_activity",
        numerator="offer",
        denominator="n",
        scale=100,
        numerator_rows=Q(entered_offer_at__isnull=False),
        extra=("open",),
    )
)
add(
    Kpi(
        "pipeline_created",
        _("Pipeline created"),
        MONEY,
        EVENT,
        HIGHER,
        _("Σ current value of deals that entered needs"),
        stage=Stage.NEEDS,
        family="needs",
        numerator="pipeline",
    )
)

# Stage 4: offer ------------------------------------------------------------------------
add(
    Kpi(
        "offers_sent",
        _("Offers sent"),
        COUNT,
        EVENT,
        HIGHER,
        _("Offer versions sent"),
        stage=Stage.OFFER,
        family="offer_sent",
        numerator="n",
    )
)
add(
    Kpi(
        "offer_prep_days",
        _("Offer preparation (days)"),
        DAYS,
        EVENT,
        LOWER,
        _("Mean days from preparation start to sending, per version sent"),
        stage=Stage.OFFER,
        family="offer_sent",
        numerator="prep_days",
        denominator="n",
    )
)
add(
    Kpi(
        "offer_acceptance_pct",
        _("Offer acceptance %"),
        PCT,
        COHORT,
        HIGHER,
        _("Deals whose first offer was sent in the period with an accepted version ÷ all × 100"),
        stage=Stage.OFFER,
        family="first_offer",
        numerator="accepted",
        denominator="n",
        scale=100,
        numerator_rows=Q(_accepted=True),
        extra=("pending", "open"),
    )
)
add(
    Kpi(
        "avg_offer_value",
        _("Average offer value"),
        MONEY,
        EVENT,
        HIGHER,
        _("Mean value of the first versions sent"),
        stage=Stage.OFFER,
        family="first_offer",
        numerator="value",
        denominator="n",
    )
)
add(
    Kpi(
        "offer_versions_per_deal",
        _("Offer versions per deal"),
        RATIO,
        EVENT,
        LOWER,
        _("Mean versions sent per deal that left the offer stage"),
        stage=Stage.OFFER,
        family="left_offer",
        numerator="versions",
        denominator="n",
    )
)
add(
    Kpi(
        "offer_turnaround_days",
        _("Offer turnaround (days)"),
        DAYS,
        EVENT,
        LOWER,
        _("Mean days from sending an offer to the client's response"),
        stage=Stage.OFFER,
        family="offer_response",
        numerator="days",
        denominator="n",
    )
)

# Stage 5: negotiation ------------------------------------------------------------------
add(
    Kpi(
        "negotiation_days",
        _("Negotiation duration (days)"),
        DAYS,
        EVENT,
        LOWER,
        _("Mean days of the negotiations concluded"),
        stage=Stage.NEGOTIATION,
        family="negotiation_end",
        numerator="days",
        denominator="n",
    )
)
add(
    Kpi(
        "negotiation_rounds",
        _("Negotiation rounds"),
        RATIO,
        EVENT,
        LOWER,
        _("Mean number of rounds of the negotiations concluded"),
        stage=Stage.NEGOTIATION,
        family="negotiation_end",
        numerator="rounds",
        denominator="n",
    )
)
add(
    Kpi(
        "negotiation_success_pct",
        _("Negotiation success %"),
        PCT,
        EVENT,
        HIGHER,
        _("Concluded negotiations that reached closing ÷ all concluded × 100"),
        stage=Stage.NEGOTIATION,
        family="negotiation_end",
        numerator="success",
        denominator="n",
        scale=100,
        numerator_rows=Q(entered_closing_at__isnull=False),
    )
)
add(
    Kpi(
        "avg_discount_pct",
        _("Average discount %"),
        PCT,
        EVENT,
        LOWER,
        _("Unweighted mean closing discount of deals that entered closing"),
        stage=Stage.NEGOTIATION,
        family="closing",
        numerator="discount_sum",
        denominator="discount_n",
        numerator_rows=Q(discount_pct__isnull=False),
    )
)
add(
    Kpi(
        "offer_value_retention_pct",
        _("Offer value retention %"),
        PCT,
        EVENT,
        HIGHER,
        _("Σ agreed value ÷ Σ value of the first sent offer × 100, deals that entered closing"),
        stage=Stage.NEGOTIATION,
        family="closing",
        numerator="agreed",
        denominator="offered",
        scale=100,
        numerator_rows=Q(agreed_value_base__isnull=False, _first_value__isnull=False),
    )
)

# Stage 6: closing ----------------------------------------------------------------------
add(
    Kpi(
        "sales_conversion_pct",
        _("Sales conversion %"),
        PCT,
        COHORT,
        HIGHER,
        _("Leads created in the period that were won ÷ all × 100"),
        stage=Stage.CLOSING,
        family="lead",
        numerator="won",
        denominator="n",
        scale=100,
        numerator_rows=WON_Q,
        extra=("open",),
    )
)
add(
    Kpi(
        "opportunity_conversion_pct",
        _("Opportunity conversion %"),
        PCT,
        COHORT,
        HIGHER,
        _("Deals that entered needs in the period that were won ÷ all × 100"),
        stage=Stage.CLOSING,
        family="needs",
        numerator="won",
        denominator="n",
        scale=100,
        numerator_rows=WON_Q,
        extra=("open",),
    )
)
add(
    Kpi(
        "win_rate_pct",
        _("Win rate %"),
        PCT,
        EVENT,
        HIGHER,
        _("Opportunities won ÷ (won + lost opportunities), closed in the period"),
        stage=Stage.CLOSING,
        family="won",
        numerator="n",
        denominator="closed_opps",
        scale=100,
        computed_by="outcomes",
    )
)
add(
    Kpi(
        "days_to_close",
        _("Days to close"),
        DAYS,
        EVENT,
        LOWER,
        _("Mean days from lead creation to won"),
        stage=Stage.CLOSING,
        family="won",
        numerator="close_days",
        denominator="n",
    )
)
add(
    Kpi(
        "days_to_close_median",
        _("Days to close (median)"),
        DAYS,
        EVENT,
        LOWER,
        _("Median days from lead creation to won"),
        stage=Stage.CLOSING,
        family="won",
        median="close_days",
    )
)
add(
    Kpi(
        "won_value",
        _("Won value"),
        MONEY,
        EVENT,
        HIGHER,
        _("Σ final value of won deals"),
        stage=Stage.CLOSING,
        family="won",
        numerator="value",
    )
)
add(
    Kpi(
        "lost_value",
        _("Lost value"),
        MONEY,
        EVENT,
        LOWER,
        _("Σ current value of lost opportunities"),
        stage=Stage.CLOSING,
        family="lost",
        numerator="opp_value",
        numerator_rows=Q(entered_needs_at__isnull=False),
    )
)
add(
    Kpi(
        "lost_reasons",
        _("Lost deals"),
        COUNT,
        EVENT,
        LOWER,
        _("Lost deals (disqualified leads included), by reason and by stage lost at"),
        stage=Stage.CLOSING,
        family="lost",
        numerator="n",
        breakdowns=("reason", "stage"),
    )
)
add(
    Kpi(
        "lost_reasons_value",
        _("Lost deals' value"),
        MONEY,
        EVENT,
        LOWER,
        _("Σ current value of lost deals, by reason and by stage lost at"),
        stage=Stage.CLOSING,
        family="lost",
        numerator="value",
        breakdowns=("reason", "stage"),
    )
)
add(
    Kpi(
        "proforma_payment_days",
        _("Pro-forma payment time (days)"),
        DAYS,
        EVENT,
        LOWER,
        _("Mean days from pro-forma issue to payment, won pro-forma deals"),
        stage=Stage.CLOSING,
        family="won",
        numerator="proforma_days",
        denominator="proforma_n",
        numerator_rows=Q(closing_document__document_type="proforma"),
    )
)

# Funnel-wide, per stage ----------------------------------------------------------------
for _stage in stages.ORDER:
    _next = stages.following(_stage)
    _label = _stage.label
    if _next is not None:
        add(
            Kpi(
                f"conversion_{_stage}_{_next}_pct",
                interpolate_lazy(
                    pgettext_lazy("kpi", "Conversion %(stage)s → %(next)s %%"),
                    {"stage": _label, "next": _next.label},
                ),
                PCT,
                COHORT,
                HIGHER,
                _("Deals that reached the next stage ÷ deals that reached this one × 100"),
                family=f"reached_{_stage}",
                numerator="next",
                denominator="n",
                scale=100,
                numerator_rows=Q(**{f"{stages.stamp_field(_next)}__isnull": False}),
                extra=("open",),
            )
        )
    add(
        Kpi(
            f"dropoff_{_stage}_pct",
            interpolate_lazy(pgettext_lazy("kpi", "Drop-off at %(stage)s %%"), {"stage": _label}),
            PCT,
            COHORT,
            LOWER,
            _("Deals lost at this stage ÷ deals that reached it × 100"),
            family=f"reached_{_stage}",
            numerator="lost_here",
            denominator="n",
            scale=100,
            numerator_rows=Q(status=Status.LOST, lost_stage=_stage),
            extra=("open",),
        )
    )
    add(
        Kpi(
            f"time_in_{_stage}_days",
            interpolate_lazy(pgettext_lazy("kpi", "Days in %(stage)s"), {"stage": _label}),
            DAYS,
            EVENT,
            LOWER,
            _("Mean days spent in the stage (stays only, skips excluded)"),
            family=f"stay_{_stage}",
            numerator="days",
            denominator="n",
        )
    )
    add(
        Kpi(
            f"time_in_{_stage}_days_median",
            interpolate_lazy(pgettext_lazy("kpi", "Days in %(stage)s (median)"), {"stage": _label}),
            DAYS,
            EVENT,
            LOWER,
            _("Median days spent in the stage (stays only, skips excluded)"),
            family=f"stay_{_stage}",
            median="days",
        )
    )
    if _stage not in (Stage.LEAD, Stage.CLOSING):
        add(
            Kpi(
                f"skipped_{_stage}_pct",
                interpolate_lazy(pgettext_lazy("kpi", "Skipped %(stage)s %%"), {"stage": _label}),
                PCT,
                EVENT,
                NEUTRAL,
                _("Deals that skipped the stage ÷ deals that reached it × 100"),
                family=f"reached_{_stage}",
                numerator="skipped",
                denominator="n",
                scale=100,
            )
        )
    add(
        Kpi(
            f"open_deals_{_stage}",
            interpolate_lazy(pgettext_lazy("kpi", "Open deals in %(stage)s"), {"stage": _label}),
            COUNT,
            NOW,
            NEUTRAL,
            _("Open deals in the stage now"),
            computed_by="now",
        )
    )
    add(
        Kpi(
            f"open_value_{_stage}",
            interpolate_lazy(pgettext_lazy("kpi", "Open value in %(stage)s"), {"stage": _label}),
            MONEY,
            NOW,
            NEUTRAL,
            _("Σ current value of the open deals in the stage now"),
            computed_by="now",
        )
    )
add(
    Kpi(
        "stalled_deals",
        _("Stalled deals"),
        COUNT,
        NOW,
        LOWER,
        _("Open deals with no stage change or activity for longer than their stage's limit"),
        computed_by="now",
    )
)

# Company level -------------------------------------------------------------------------
_company = [
    (
        "revenue",
        _("Revenue"),
        MONEY,
        HIGHER,
        _("Won value in the period (bookings)"),
        PEOPLE_SLICES,
    ),
    (
        "revenue_growth_pct",
        _("Revenue growth %"),
        PCT,
        HIGHER,
        _("(This period − previous) ÷ previous × 100"),
        PEOPLE_SLICES,
    ),
    (
        "avg_deal_size",
        _("Average deal size"),
        MONEY,
        HIGHER,
        _("Revenue ÷ deals won"),
        PEOPLE_SLICES,
    ),
    (
        "sales_cycle_days",
        _("Sales cycle (days)"),
        DAYS,
        LOWER,
        _("Mean days from entering needs to won, deals won in the period"),
        PEOPLE_SLICES,
    ),
    (
        "sales_cycle_days_median",
        _("Sales cycle (median days)"),
        DAYS,
        LOWER,
        _("Median days from entering needs to won, deals won in the period"),
        PEOPLE_SLICES,
    ),
    (
        "weighted_pipeline",
        _("Weighted pipeline"),
        MONEY,
        HIGHER,
        _(
            "Σ current value × stage probability, open opportunities expected to close in the period"
        ),
        PEOPLE_SLICES,
    ),
    (
        "pipeline_velocity",
        _("Pipeline velocity (per day)"),
        MONEY_PER_DAY,
        HIGHER,
        _("Open opportunities × win rate × average deal size ÷ sales cycle, trailing 12 months"),
        PEOPLE_SLICES,
    ),
    (
        "pipeline_coverage",
        _("Pipeline coverage"),
        RATIO,
        HIGHER,
        _("Open pipeline expected to close in the period ÷ (target − won so far)"),
        PEOPLE_SLICES,
    ),
    (
        "quota_attainment_pct",
        _("Reps at quota %"),
        PCT,
        HIGHER,
        _("Reps at or above their target ÷ reps with a target × 100"),
        ("company", "team"),
    ),
    (
        "target_attainment_pct",
        _("Target attainment %"),
        PCT,
        HIGHER,
        _("Revenue ÷ target × 100"),
        PEOPLE_SLICES,
    ),
    (
        "rep_productivity",
        _("Revenue per rep"),
        MONEY,
        HIGHER,
        _("Revenue ÷ active reps"),
        ("company", "team"),
    ),
    (
        "new_leads_per_rep",
        _("New leads per rep"),
        RATIO,
        HIGHER,
        _("Leads ÷ active reps"),
        ("company", "team"),
    ),
    (
        "cac",
        _("Customer acquisition cost"),
        MONEY,
        LOWER,
        _("(Marketing spend + sales cost) ÷ new customers"),
        COMPANY_ONLY,
    ),
    (
        "sales_cost_ratio_pct",
        _("Sales cost ratio %"),
        PCT,
        LOWER,
        _("(Marketing spend + sales cost) ÷ revenue × 100"),
        COMPANY_ONLY,
    ),
    (
        "forecast_accuracy_pct",
        _("Forecast accuracy %"),
        PCT,
        HIGHER,
        _("max(0, 1 − |actual − forecast| ÷ actual) × 100"),
        ("company", "team"),
    ),
    (
        "clv",
        _("Customer lifetime value"),
        MONEY,
        HIGHER,
        _("Won value per active customer per year × lifetime in years (1 ÷ annual churn)"),
        COMPANY_ONLY,
    ),
    (
        "churn_pct",
        _("Customer churn %"),
        PCT,
        LOWER,
        _("Customers active at the start and not at the end ÷ active at the start × 100"),
        COMPANY_ONLY,
    ),
    (
        "repeat_customer_pct",
        _("Repeat customers %"),
        PCT,
        HIGHER,
        _("Customers with two or more won deals ÷ customers × 100"),
        COMPANY_ONLY,
    ),
    (
        "calls_per_rep",
        _("Calls per rep"),
        RATIO,
        HIGHER,
        _("Calls logged ÷ active reps"),
        PEOPLE_SLICES,
    ),
    (
        "emails_per_rep",
        _("E-mails per rep"),
        RATIO,
        HIGHER,
        _("E-mails logged ÷ active reps"),
        PEOPLE_SLICES,
    ),
    (
        "meetings_per_rep",
        _("Meetings per rep"),
        RATIO,
        HIGHER,
        _("Meetings and audits held ÷ active reps"),
        PEOPLE_SLICES,
    ),
]
for _code, _lbl, _unit, _dir, _formula, _slices in _company:
    add(Kpi(_code, _lbl, _unit, EVENT, _dir, _formula, slices=_slices, computed_by="company"))

#: Shown together, not stored: the channel conversion pair of stage 1.
COMPOSITES = {"channel_conversion": ("lead_quality_pct", "sales_conversion_pct")}
