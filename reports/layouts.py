"""What each report shows: its tables, in order, as data. The views read these; the
KPI labels, units, directions and formulas come from kpis/definitions.py."""

from dataclasses import dataclass

from django.utils.translation import gettext_lazy as _

from funnel import stages
from funnel.stages import Stage

KPIS_TABLE, BREAKDOWN_TABLE, SLICES_TABLE = "kpis", "breakdown", "slices"


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    codes: tuple
    kind: str = KPIS_TABLE
    breakdown: str = ""  # breakdown type of a breakdown table
    slice_prefix: str = ""  # slice kind of a slices table (e.g. "channel")
    note: str = ""


def stage_kpis(stage):
    """The funnel-wide KPIs of one stage: time in it, conversion onwards, drop-off, skips."""
    nxt = stages.following(stage)
    codes = [f"time_in_{stage}_days", f"time_in_{stage}_days_median"]
    if nxt is not None:
        codes.append(f"conversion_{stage}_{nxt}_pct")
    codes.append(f"dropoff_{stage}_pct")
    if stage not in (Stage.LEAD, Stage.CLOSING):
        codes.append(f"skipped_{stage}_pct")
    return Table("funnel", _("Time in stage and conversion"), tuple(codes))


QUALIFICATION_BREAKDOWNS = (
    ("source", _("By how they heard of us")),
    ("prompt", _("By what prompted the contact")),
    ("scope", _("By product or service scope")),
    ("industry", _("By industry")),
    ("segment", _("By segment")),
)

STAGE_REPORTS = {
    Stage.LEAD: (
        Table(
            "kpis",
            _("Leads"),
            (
                "leads",
                "cpl",
                "lead_acquisition_days",
                "cost_per_opportunity",
                "channel_roi_pct",
            ),
        ),
        Table(
            "channels",
            _("Channels: cost per lead, lead quality and sales conversion"),
            (
                "leads",
                "cpl",
                "lead_quality_pct",
                "sales_conversion_pct",
                "cost_per_opportunity",
                "channel_roi_pct",
            ),
            kind=SLICES_TABLE,
            slice_prefix="channel",
            note=_("Per channel of the whole company; shown without other filters."),
        ),
    ),
    Stage.QUALIFICATION: (
        Table(
            "kpis",
            _("Qualification"),
            ("qualified_leads", "lead_quality_pct", "time_to_qualify_days"),
        ),
        *(
            Table(
                f"by_{kind}",
                title,
                ("leads", "lead_quality_pct"),
                kind=BREAKDOWN_TABLE,
                breakdown=kind,
            )
            for kind, title in QUALIFICATION_BREAKDOWNS
        ),
    ),
    Stage.NEEDS: (
        Table(
            "kpis",
            _("Needs analysis"),
            ("needs_meetings", "meeting_conversion_pct", "pipeline_created"),
        ),
    ),
    Stage.OFFER: (
        Table(
            "kpis",
            _("Offers"),
            (
                "offers_sent",
                "offer_prep_days",
                "offer_acceptance_pct",
                "avg_offer_value",
                "offer_versions_per_deal",
                "offer_turnaround_days",
            ),
        ),
    ),
    Stage.NEGOTIATION: (
        Table(
            "kpis",
            _("Negotiation"),
            (
                "negotiation_rounds",
                "negotiation_days",
                "negotiation_success_pct",
                "avg_discount_pct",
                "offer_value_retention_pct",
            ),
        ),
    ),
    Stage.CLOSING: (
        Table(
            "kpis",
            _("Closing"),
            (
                "sales_conversion_pct",
                "opportunity_conversion_pct",
                "win_rate_pct",
                "days_to_close",
                "days_to_close_median",
                "won_value",
                "lost_value",
                "lost_reasons",
                "lost_reasons_value",
                "proforma_payment_days",
            ),
        ),
        Table(
            "by_reason",
            _("Lost deals by reason"),
            ("lost_reasons", "lost_reasons_value"),
            kind=BREAKDOWN_TABLE,
            breakdown="reason",
        ),
        Table(
            "by_stage",
            _("Lost deals by stage lost at"),
            ("lost_reasons", "lost_reasons_value"),
            kind=BREAKDOWN_TABLE,
            breakdown="stage",
        ),
    ),
}

COMPANY_REPORT = (
    Table(
        "revenue",
        _("Revenue and deals"),
        (
            "revenue",
            "revenue_growth_pct",
            "avg_deal_size",
            "win_rate_pct",
            "sales_cycle_days",
            "sales_cycle_days_median",
        ),
    ),
    Table(
        "pipeline",
        _("Pipeline"),
        ("weighted_pipeline", "pipeline_velocity", "pipeline_coverage", "stalled_deals"),
    ),
    Table(
        "targets",
        _("Targets and productivity"),
        (
            "target_attainment_pct",
            "quota_attainment_pct",
            "rep_productivity",
            "new_leads_per_rep",
            "calls_per_rep",
            "emails_per_rep",
            "meetings_per_rep",
        ),
    ),
    Table(
        "costs",
        _("Costs, forecast and customers"),
        (
            "cac",
            "sales_cost_ratio_pct",
            "forecast_accuracy_pct",
            "churn_pct",
            "clv",
            "repeat_customer_pct",
        ),
    ),
)


def funnel_codes():
    """Every KPI the funnel overview reads."""
    codes = []
    for stage in stages.ORDER:
        nxt = stages.following(stage)
        if nxt is not None:
            codes.append(f"conversion_{stage}_{nxt}_pct")
        codes += [
            f"dropoff_{stage}_pct",
            f"time_in_{stage}_days",
            f"time_in_{stage}_days_median",
            f"open_deals_{stage}",
            f"open_value_{stage}",
        ]
        if stage not in (Stage.LEAD, Stage.CLOSING):
            codes.append(f"skipped_{stage}_pct")
    return codes


def stage_report(stage):
    """The tables of a stage report: its own KPIs, breakdowns, then the funnel's."""
    return (*STAGE_REPORTS[stage], stage_kpis(stage))


def report_codes(tables):
    codes = []
    for table in tables:
        for code in table.codes:
            if code not in codes:
                codes.append(code)
    return codes
