"""Marketing spend and sales cost per period: monthly amounts prorated by days into
shorter periods (domain.md, `cpl`). The tables hold one row per channel (or team) and
month, so this walks rows of spend, never deals."""

import calendar
import datetime
from collections import defaultdict
from decimal import Decimal

from funnel.models import MarketingSpend, SalesCost
from kpis.periods import Grain, periods_between


def _prorate(rows, grain, first, end):
    """{(period start, key): amount} for rows of (key, month, amount_base)."""
    out = defaultdict(Decimal)
    for key, month, amount in rows:
        days_in_month = calendar.monthrange(month.year, month.month)[1]
        month_end = month + datetime.timedelta(days=days_in_month)
        for period in periods_between(
            grain, max(month, first), min(month_end, end) - datetime.timedelta(days=1)
        ):
            overlap = (min(period.end, month_end) - max(period.start, month)).days
            if overlap <= 0:
                continue
            if overlap == days_in_month:
                out[(period.start, key)] += amount
            else:
                out[(period.start, key)] += amount * Decimal(overlap) / Decimal(days_in_month)
    return out


def spend_by_period(grain, first: datetime.date, end: datetime.date):
    """Marketing spend per (period start, slice) for the company and each channel."""
    rows = MarketingSpend.objects.filter(
        month__lt=end, month__gte=first.replace(day=1)
    ).values_list("channel_id", "month", "amount_base")
    per_channel = _prorate(rows, Grain(grain), first, end)
    out = defaultdict(Decimal)
    for (start, channel_id), amount in per_channel.items():
        out[(start, f"channel:{channel_id}")] += amount
        out[(start, "company")] += amount
    return dict(out)


def sales_cost_by_period(grain, first: datetime.date, end: datetime.date):
    """Sales cost per (period start, slice): the company (every row) and each team."""
    rows = SalesCost.objects.filter(month__lt=end, month__gte=first.replace(day=1)).values_list(
        "team_id", "month", "amount_base"
    )
    per_team = _prorate(rows, Grain(grain), first, end)
    out = defaultdict(Decimal)
    for (start, team_id), amount in per_team.items():
        if team_id is not None:
            out[(start, f"team:{team_id}")] += amount
        out[(start, "company")] += amount
    return dict(out)
