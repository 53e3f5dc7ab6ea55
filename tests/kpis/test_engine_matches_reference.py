"""The property that makes the numbers trustworthy: on random small datasets built
through the domain functions, the set-based engine gives exactly what the naive
per-deal reference implementation (tests/kpis/reference.py) gives, for every KPI,
grain, period, slice and breakdown."""

from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from hypothesis import given

from kpis import compute
from kpis.definitions import KPIS
from kpis.models import StageSetting
from kpis.periods import GRAINS, Grain, Period, local_date, periods_between
from tests.factories import days_ago, make_deal
from tests.kpis.reference import (
    build_dataset,
    deal_scripts,
    load,
    make_cast,
    property_settings,
    reference_kpis,
    window_origin,
)

TOLERANCE = Decimal("0.000001")


def same(a, b):
    if a is None or b is None:
        return a is None and b is None
    a, b = Decimal(a), Decimal(b)
    return abs(a - b) <= TOLERANCE * max(Decimal(1), abs(a), abs(b))


def engine_values(rows):
    return {
        (r.kpi, r.period_start, r.slice, r.breakdown): (r.value, r.numerator, r.denominator)
        for r in rows
    }


def slices_of(data):
    keys = ["company"]
    keys += [f"team:{t}" for t in sorted({u.team_id for u in data.users.values() if u.team_id})]
    keys += [f"rep:{d.owner_id}" for d in data.deals]
    keys += [f"channel:{d.channel_id}" for d in data.deals if d.channel_id]
    keys += [f"segment:{d.segment}" for d in data.deals if d.segment]
    keys += [f"industry:{d.industry}" for d in data.deals if d.industry]
    return sorted(set(keys))


def breakdowns_of(data):
    keys = set()
    for d in data.deals:
        for kind, value in (
            ("source", d.heard_from),
            ("prompt", d.contact_prompt),
            ("scope", d.product_scope),
            ("industry", d.industry),
            ("segment", d.segment),
            ("stage", d.lost_stage),
            ("reason", d.lost_reason.code if d.lost_reason_id else ""),
        ):
            if value:
                keys.add(f"{kind}:{value}")
    return sorted(keys)


def compare(now):
    data = load()
    origin = window_origin(now)
    mismatches = []
    for grain in GRAINS:
        periods = periods_between(grain, local_date(origin), local_date(now))
        engine = engine_values(compute.compute(grain, periods, now=now))
        for period in periods:
            for slice_key in slices_of(data):
                for breakdown in ["", *(breakdowns_of(data) if slice_key == "company" else [])]:
                    expected = reference_kpis(
                        grain, period.start, slice_key, breakdown, now=now, data=data
                    )
                    for code, want in expected.items():
                        got = engine.get((code, period.start, slice_key, breakdown))
                        if got is None:
                            got = compute.empty(KPIS[code])
                        if not all(same(g, w) for g, w in zip(got, want, strict=True)):
                            mismatches.append(
                                (grain, period.label, slice_key, breakdown, code, got, want)
                            )
    return mismatches


@property_settings()
@given(scripts=deal_scripts(max_size=8))
def test_set_based_kpis_equal_the_naive_reference(db, scripts):
    now = timezone.now()
    with transaction.atomic():
        build_dataset(scripts, make_cast(), now=now)
        mismatches = compare(now)
        transaction.set_rollback(True)
    report = "\n".join(" ".join(map(str, m)) for m in mismatches[:40])
    assert not mismatches, f"{len(mismatches)} mismatches:\n{report}"


def test_no_deal_is_stalled_while_no_stage_has_a_stall_limit(db, rep):
    """No stay measured and no admin limit: no stage has a stall limit, so no open deal
    is stalled (an empty condition used to count every open deal as stalled)."""
    StageSetting.objects.update(stall_limit_days=None)
    for days in (200, 150):
        make_deal(rep, at=days_ago(days))
    now = timezone.now()
    period = Period.containing(Grain.MONTH, local_date(now))
    rows = engine_values(compute.compute(Grain.MONTH, [period], now=now))
    assert rows[("open_deals_lead", period.start, "company", "")] == (2, 2, None)
    # A count of 0 is stored as no row (compute._is_empty).
    assert ("stalled_deals", period.start, "company", "") not in rows
    assert not compare(now)
