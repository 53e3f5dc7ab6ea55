"""The deals behind a number: for a KPI, a period and a slice, the deals counted in its
numerator and in its denominator. Reports link every value here; the rows come from the
same family definitions the engine aggregates, so the lists match the numbers."""

from django.db.models import Q

from funnel.models import Deal
from kpis.definitions import KPIS
from kpis.families import FAMILIES

#: Company-level KPIs whose deals are a family's rows (revenue is the won family).
COMPANY_FAMILIES = {
    "revenue": "won",
    "revenue_growth_pct": "won",
    "avg_deal_size": "won",
    "sales_cycle_days": "won",
    "sales_cycle_days_median": "won",
    "target_attainment_pct": "won",
    "rep_productivity": "won",
    "new_leads_per_rep": "lead",
}


class NoDrillDown(LookupError):
    pass


def _deals(family, rows):
    if family.model is Deal:
        return Deal.objects.filter(pk__in=rows.values("pk"))
    return Deal.objects.filter(pk__in=rows.values("deal_id"))


def deals_behind(code, period, slice_key="company", breakdown=""):
    """(numerator deals, denominator deals or None) as Deal querysets. The caller
    narrows them with ``visible_to(user)``."""
    kpi = KPIS[code]
    family_name = kpi.family or COMPANY_FAMILIES.get(code)
    if family_name is None:
        raise NoDrillDown(f"{code} is not computed from a list of deals")
    family = FAMILIES[family_name]
    slice_type, _, slice_value = slice_key.partition(":")
    breakdown_type, _, breakdown_value = breakdown.partition(":")
    rows = family.rows(
        period,
        slice_type if slice_type != "company" else None,
        _slice_value(slice_type, slice_value),
        breakdown_type or None,
        breakdown_value or None,
    )
    numerator_rows = rows.filter(kpi.numerator_rows) if kpi.numerator_rows is not None else rows
    denominator = _deals(family, rows) if kpi.denominator or kpi.computed_by == "outcomes" else None
    if kpi.computed_by == "outcomes":
        # Win rate: won opportunities over won and lost opportunities of the period.
        lost = FAMILIES["lost"].rows(period).filter(entered_needs_at__isnull=False)
        if slice_type != "company":
            lost = lost.filter(
                **{FAMILIES["lost"].slice_field(slice_type): _slice_value(slice_type, slice_value)}
            )
        denominator = Deal.objects.filter(Q(pk__in=rows.values("pk")) | Q(pk__in=lost.values("pk")))
    return _deals(family, numerator_rows), denominator


def _slice_value(slice_type, value):
    if slice_type in ("team", "rep", "channel"):
        return int(value)
    return value or None
