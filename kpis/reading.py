"""Reading stored KPI values: what reports, the API, exports and ``show_kpis`` use.

Snapshots are stored sparsely (a slice with no activity in a period has no rows), so a
missing value reads as the KPI's empty value: 0 for counts and sums, "no value" for
ratios and means.
"""

import datetime
from decimal import Decimal

from django.core.cache import cache
from django.db.models import F
from django.utils import timezone

from accounts.models import Team, User
from funnel.models import Channel, Deal
from funnel.stages import Status
from kpis.company import percentile_days, year_before
from kpis.compute import empty, empty_extra
from kpis.definitions import COMPOSITES, KPIS
from kpis.models import DirtyDay, KpiSnapshot, MaturityHorizon, StaleMedian
from kpis.periods import Grain, hour_of

#: While fewer deals than this were won in the trailing 12 months, a cohort matures
#: after DEFAULT_MATURITY_DAYS (domain.md, "Periods, slices and bases").
MIN_WON_FOR_MATURITY = 20
DEFAULT_MATURITY_DAYS = 90
MATURITY_PERCENTILE = 80


class UnknownSlice(ValueError):
    pass


def resolve_slice(text):
    """'company', 'team:<name or id>', 'rep:<username or id>', 'channel:<name or id>',
    'segment:<value>', 'industry:<value>' -> the stored slice key."""
    text = (text or "company").strip()
    if text == "company":
        return text
    kind, _, value = text.partition(":")
    lookups = {
        "team": (Team, "name"),
        "rep": (User, "username"),
        "channel": (Channel, "name"),
    }
    if kind in ("segment", "industry") and value:
        return f"{kind}:{value}"
    if kind not in lookups or not value:
        raise UnknownSlice(
            f"Unknown slice {text!r}: use company, team:, rep:, channel:, segment: or industry:"
        )
    model, field = lookups[kind]
    found = model.objects.filter(**{field: value}).values_list("pk", flat=True).first()
    if found is None and value.isdigit():
        found = model.objects.filter(pk=int(value)).values_list("pk", flat=True).first()
    if found is None:
        raise UnknownSlice(f"No {kind} called {value!r}")
    return f"{kind}:{found}"


def maturity_days(now=None):
    """Days after its period's end when a cohort value is mature: the 80th percentile
    of days to close over the trailing 12 months, or 90 while fewer than 20 won. Taken
    once an hour (``MaturityHorizon``): from the cache, else the stored row, else
    computed now and stored."""
    hour = hour_of(now)
    key = _maturity_key(hour)
    cached = cache.get(key)
    if cached is not None:
        return cached
    result = MaturityHorizon.objects.filter(hour=hour).values_list("days", flat=True).first()
    if result is None:
        result = store_maturity(hour)
    cache.set(key, result, 3600)
    return result


def _maturity_key(hour):
    return f"kpis:maturity:{hour:%Y-%m-%d-%H}"


def ensure_maturity(now=None, fresh=False):
    """Store this hour's horizon unless it is stored already: recomputes call this, so
    that the first report of the hour reads it instead of computing it. ``fresh``
    (a full recompute): take it again from the deals as they are now."""
    hour = hour_of(now)
    if fresh or not MaturityHorizon.objects.filter(hour=hour).exists():
        cache.set(_maturity_key(hour), store_maturity(hour), 3600)


def forget_maturity():
    """Drop the stored horizons (after a load of deals: the wins just loaded move it):
    the next reader or recompute takes this hour's again."""
    MaturityHorizon.objects.all().delete()
    cache.delete(_maturity_key(hour_of(None)))


def store_maturity(hour):
    won = Deal.objects.filter(status=Status.WON, won_at__gte=year_before(hour), won_at__lt=hour)
    # The count and the percentile in the database: a year of wins is 180,000 rows at
    # 1M deals, too many to fetch.
    result = percentile_days(
        won, F("won_at") - F("entered_lead_at"), MATURITY_PERCENTILE, MIN_WON_FOR_MATURITY
    )
    if result is None:
        result = Decimal(DEFAULT_MATURITY_DAYS)
    result = result.quantize(Decimal("0.0001"))
    MaturityHorizon.store(hour, days=result)
    return result


def is_immature(period, now=None):
    now = now or timezone.now()
    return period.end_at + datetime.timedelta(days=float(maturity_days(now))) > now


def is_dirty(period):
    """Whether a recompute of ``period`` is pending: one of its days is marked, or,
    for a larger period, its medians wait for the step after the days
    (``StaleMedian``). One query."""
    days = DirtyDay.objects.filter(day__gte=period.start, day__lt=period.end).values("pk")
    if Grain(period.grain) == Grain.DAY:
        return days.exists()
    medians = StaleMedian.objects.filter(grain=period.grain, period_start=period.start)
    return days.union(medians.values("pk")).exists()


def kpi_values(grain, period, slice_key="company", breakdown="", now=None):
    """{code: {"value", "numerator", "denominator", "extra", "immature"}} for every KPI
    that applies to the slice and breakdown, in registry order."""
    slice_type = slice_key.split(":", 1)[0]
    breakdown_type = breakdown.split(":", 1)[0] if breakdown else None
    stored = {
        s.kpi: s
        for s in KpiSnapshot.objects.filter(
            grain=grain, period_start=period.start, slice=slice_key, breakdown=breakdown
        )
    }
    immature = is_immature(period, now)
    out = {}
    for kpi in KPIS:
        if slice_type not in kpi.slices:
            continue
        if breakdown_type and breakdown_type not in kpi.breakdowns:
            continue
        snap = stored.get(kpi.code)
        if snap is not None:
            value, num, den, extra = snap.value, snap.numerator, snap.denominator, snap.extra
        else:
            (value, num, den), extra = empty(kpi), empty_extra(kpi)
        out[kpi.code] = {
            "value": value,
            "numerator": num,
            "denominator": den,
            "extra": extra,
            "immature": kpi.is_cohort and immature,
        }
    return out


def composites(values):
    """The KPIs domain.md names that are a pair of stored KPIs (channel_conversion:
    lead quality and sales conversion of a channel's leads), where both apply."""
    return {
        code: {part: values[part]["value"] for part in parts}
        for code, parts in COMPOSITES.items()
        if all(part in values for part in parts)
    }
