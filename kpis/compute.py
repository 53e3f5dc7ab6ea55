"""Set-based KPI computation.

``compute(grain, periods)`` runs each family's aggregate query once per slice type
(and breakdown) over the whole range of periods, grouped by period and slice, then
turns the measures into KPI values with the registry's formulas. ``store`` replaces the
snapshots of those periods in one transaction, so recomputing is idempotent.
"""

import datetime
import statistics
from collections import defaultdict
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from accounts.models import User
from kpis import company
from kpis.definitions import KPIS
from kpis.families import FAMILIES
from kpis.models import KpiSnapshot
from kpis.spend import spend_by_period

MICROSECONDS_PER_DAY = Decimal(86_400_000_000)


def number(value):
    """A measure as a Decimal: durations become (fractional) days."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        micro = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        return Decimal(micro) / MICROSECONDS_PER_DAY
    return Decimal(value)


def breakdown_key(breakdown_type, value):
    return f"{breakdown_type}:{value}" if breakdown_type else ""


class Measures:
    """Measures of every family, by (period start, slice, breakdown)."""

    def __init__(self):
        self.sums = defaultdict(lambda: defaultdict(dict))
        self.values = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
        self.medians = defaultdict(dict)  # key -> {(family, measure): median}, from SQL

    def get(self, key, family, measure):
        value = self.sums[key][family].get(measure)
        return Decimal(0) if value is None else value

    def median(self, key, family, measure):
        if key in self.medians:
            return self.medians[key].get((family, measure))
        values = self.values.get(key, {}).get(family, {}).get(measure)
        return statistics.median(values) if values else None

    def families_at(self, key):
        """The families with rows at ``key``."""
        out = set(self.sums.get(key, ())) | set(self.values.get(key, ()))
        return out | {family for family, _ in self.medians.get(key, ())}

    def keys(self):
        return set(self.sums) | set(self.values) | set(self.medians)


def _families_needed():
    breakdowns = defaultdict(set)
    for kpi in KPIS:
        if kpi.family:
            breakdowns[kpi.family].update(kpi.breakdowns)
    return breakdowns


def slice_keys(row, teams):
    """Every slice a grouped row belongs to."""
    keys = ["company"]
    owner = row["_owner"]
    if owner is not None:
        keys.append(f"rep:{owner}")
        if teams.get(owner) is not None:
            keys.append(f"team:{teams[owner]}")
    if row["_channel"] is not None:
        keys.append(f"channel:{row['_channel']}")
    if row["_segment"]:
        keys.append(f"segment:{row['_segment']}")
    if row["_industry"]:
        keys.append(f"industry:{row['_industry']}")
    return keys


def gather(grain, start_at, end_at):
    """Every family's measures over [start_at, end_at), by period, slice and breakdown:
    one query per family (and breakdown type), rolled up into the slices by the
    database (PostgreSQL) or here (SQLite)."""
    if connection.vendor == "postgresql":
        return _gather_rolled_up(grain, start_at, end_at)
    return _gather_python(grain, start_at, end_at)


def _gather_python(grain, start_at, end_at):
    teams = dict(User.objects.values_list("id", "team_id"))
    measures = Measures()
    for name, breakdown_types in _families_needed().items():
        family = FAMILIES[name]
        measure_names = list(family.measures)
        for breakdown_type in (None, *sorted(breakdown_types)):
            for row in family.aggregate(grain, start_at, end_at, breakdown_type):
                values = {m: number(row[m]) for m in measure_names}
                breakdown = breakdown_key(breakdown_type, row.get("_breakdown"))
                for key in slice_keys(row, teams):
                    sums = measures.sums[(row["_bucket"], key, breakdown)][name]
                    for m, v in values.items():
                        if v is not None:
                            sums[m] = sums.get(m, 0) + v
        for row in family.median_values(grain, start_at, end_at):
            for key in slice_keys(row, teams):
                lists = measures.values[(row["_bucket"], key, "")][name]
                for m in family.medians:
                    value = row[f"_m_{m}"]
                    if value is not None:
                        lists[m].append(number(value))
    return measures


def _gather_rolled_up(grain, start_at, end_at):
    measures = Measures()
    for name, breakdown_types in _families_needed().items():
        family = FAMILIES[name]
        for breakdown_type in (None, *sorted(breakdown_types)):
            rows = family.rolled_up(grain, start_at, end_at, breakdown_type)
            for bucket, slice_key, breakdown_value, sums, medians in rows:
                key = (bucket, slice_key, breakdown_key(breakdown_type, breakdown_value))
                measures.sums[key][name] = {m: number(v) for m, v in sums.items() if v is not None}
                for m, v in medians.items():
                    if v is not None:
                        measures.medians[key][(name, m)] = number(v)
    return measures


def ratio(numerator, denominator, scale=1):
    if denominator is None or denominator == 0 or numerator is None:
        return None
    return numerator / denominator * scale


def family_value(kpi, measures, key, spend):
    """(value, numerator, denominator, extra) of a family-computed KPI."""
    if kpi.median:
        return measures.median(key, kpi.family, kpi.median), None, None, {}
    extra = {m: int(measures.get(key, kpi.family, m)) for m in kpi.extra}
    if kpi.computed_by == "spend":
        money = spend.get((key[0], key[1]), Decimal(0))
        if kpi.numerator == "spend":
            num, den = money, measures.get(key, kpi.family, kpi.denominator)
        else:
            num, den = measures.get(key, kpi.family, kpi.numerator), money
        if money == 0 and kpi.code == "cpl":
            # domain.md: "a channel without spend has no CPL".
            return None, num, den, extra
        return ratio(num, den, kpi.scale), num, den, extra
    if kpi.computed_by == "outcomes":
        won = measures.get(key, "won", "n")
        closed = won + measures.get(key, "lost", "opp_n")
        return ratio(won, closed, kpi.scale), won, closed, extra
    num = measures.get(key, kpi.family, kpi.numerator)
    if kpi.denominator is None:
        return num, num, None, extra
    den = measures.get(key, kpi.family, kpi.denominator)
    return ratio(num, den, kpi.scale), num, den, extra


def compute(grain, periods, now=None):
    """Unsaved snapshots of every KPI for ``periods`` (all of one grain), all slices."""
    now = now or timezone.now()
    periods = sorted(set(periods))
    if not periods:
        return []
    wanted = {p.start for p in periods}
    # One period more at the front: growth compares with the previous period.
    first = periods[0].previous()
    start_at, end_at = first.start_at, periods[-1].end_at
    measures = gather(grain, start_at, end_at)
    spend = spend_by_period(grain, first.start, periods[-1].end)
    keys = {k for k in measures.keys() if k[0] in wanted}  # noqa: SIM118 (a method, not a dict)
    keys |= {(start, sl, "") for (start, sl) in spend if start in wanted}
    keys |= {(start, "company", "") for start in wanted}
    computed_at = timezone.now()
    by_family = _kpis_by_family()
    out = []
    for key in sorted(keys):
        start, slice_, breakdown = key
        slice_type = slice_.split(":", 1)[0]
        breakdown_type = breakdown.split(":", 1)[0] if breakdown else None
        # Only the KPIs of the families with rows here: any other KPI would read as
        # its empty value, which is not stored (``_is_empty``).
        present = measures.families_at(key)
        if not breakdown and (start, slice_) in spend:
            present.add(SPEND)
        wanted_kpis = {kpi.code: kpi for name in present for kpi in by_family.get(name, ())}
        for kpi in KPIS:
            if kpi.code not in wanted_kpis or slice_type not in kpi.slices:
                continue
            if breakdown_type and breakdown_type not in kpi.breakdowns:
                continue
            value, num, den, extra = family_value(kpi, measures, key, spend)
            out.append(
                KpiSnapshot(
                    kpi=kpi.code,
                    grain=grain,
                    period_start=start,
                    slice=slice_,
                    breakdown=breakdown,
                    value=value,
                    numerator=num,
                    denominator=den,
                    extra=extra,
                    computed_at=computed_at,
                )
            )
    out += company.compute(grain, periods, measures, spend, now, computed_at)
    # Stored sparsely: a row that says exactly what an absent row reads as (a count of
    # 0, a ratio of 0 ÷ 0) is not written (kpis/reading.py, ``empty``).
    return [row for row in out if not _is_empty(row)]


SPEND = object()  # marks a (period, slice) with marketing spend


def _kpis_by_family():
    """Family name -> the family-computed KPIs that read it."""
    out = defaultdict(list)
    for kpi in KPIS:
        if kpi.family is None:
            continue
        out[kpi.family].append(kpi)
        if kpi.computed_by == "outcomes":
            out["won"].append(kpi)
            out["lost"].append(kpi)
        if kpi.computed_by == "spend":
            out[SPEND].append(kpi)
    return out


def _is_empty(row):
    kpi = KPIS[row.kpi]
    if row.extra != empty_extra(kpi):
        return False
    expected = empty(kpi)
    return all(
        (a is None and b is None) or (a is not None and b is not None and a == b)
        for a, b in zip((row.value, row.numerator, row.denominator), expected, strict=True)
    )


def empty_extra(kpi):
    """The extra counts of a family KPI with nothing to count (all zero)."""
    return dict.fromkeys(kpi.extra, 0) if kpi.family and kpi.computed_by != "company" else {}


def empty(kpi):
    """(value, numerator, denominator) of a KPI with nothing to count: what a missing
    snapshot row reads as."""
    if kpi.median or kpi.computed_by == "company":
        return None, None, None
    if kpi.denominator is None:
        return Decimal(0), Decimal(0), None  # a count or a sum
    return None, Decimal(0), Decimal(0)


def pipeline_snapshots(grain, periods, now=None):
    """Unsaved weighted pipeline and coverage rows of ``periods`` (company.PIPELINE_KPIS)."""
    now = now or timezone.now()
    rows = company.pipeline_only(grain, sorted(set(periods)), Measures(), now, timezone.now())
    return [row for row in rows if not _is_empty(row)]


def refresh_pipeline(grain, periods, now=None):
    """Replace the pipeline KPIs of every period of ``grain`` (they follow the open
    pipeline as it is now, whichever day changed it)."""
    rows = pipeline_snapshots(grain, periods, now=now)
    with transaction.atomic():
        KpiSnapshot.objects.filter(grain=grain, kpi__in=company.PIPELINE_KPIS).delete()
        KpiSnapshot.objects.bulk_create(rows, batch_size=2000)
    return len(rows)


def store(grain, periods, now=None):
    """Replace the snapshots of ``periods``: same input, same rows. The computation
    only reads; the write transaction is kept short, so it never holds the database
    (SQLite's single writer lock, PostgreSQL row locks) while aggregating."""
    periods = sorted(set(periods))
    rows = compute(grain, periods, now=now)
    with transaction.atomic():
        KpiSnapshot.objects.filter(
            grain=grain, period_start__in=[p.start for p in periods]
        ).delete()
        KpiSnapshot.objects.bulk_create(rows, batch_size=2000)
    return len(rows)
