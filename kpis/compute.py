"""Set-based KPI computation.

``compute(grain, periods)`` runs each family's aggregate query once per slice type
(and breakdown) over the whole range of periods, grouped by period and slice, then
turns the measures into KPI values with the registry's formulas. ``store`` replaces the
snapshots of those periods in one transaction, so recomputing is idempotent.
"""

import datetime
import functools
import operator
import statistics
from collections import defaultdict
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from funnel.bulk import insert_rows, update_rows
from kpis import changes, company, dirty, ledger
from kpis.definitions import KPIS
from kpis.families import FAMILIES, run_prepared, team_members_of_all
from kpis.models import SNAPSHOT_ROW_FIELDS, KpiSnapshot, SnapshotRow
from kpis.periods import Grain, Period, periods_between
from kpis.spend import spend_by_period


def number(value):
    """A measure as a Decimal: durations become (fractional) days."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        return Decimal(ledger.microseconds(value)) / ledger.MICROSECONDS_PER_DAY
    return Decimal(value)


def breakdown_key(breakdown_type, value):
    return f"{breakdown_type}:{value}" if breakdown_type else ""


class Measures:
    """Measures of every family, by (period start, slice, breakdown). Sums are kept
    exact (ints, Decimals, timedeltas) and turned into numbers when read, so sums added
    up in any order (kpis/ledger.py) read the same."""

    def __init__(self):
        self.sums = defaultdict(lambda: defaultdict(dict))
        self.values = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
        self.medians = defaultdict(dict)  # key -> {(family, measure): median}, from SQL

    def add(self, key, family, measure, value):
        if value is not None:
            sums = self.sums[key][family]
            sums[measure] = ledger.add(sums.get(measure), value)

    def set_sums(self, key, family, sums):
        """The sums of ``family`` at ``key`` as the database gave them (None: no row)."""
        self.sums[key][family] = {m: v for m, v in sums.items() if v is not None}

    def set_medians(self, key, family, medians):
        """The medians of ``family`` at ``key`` as the database took them."""
        for measure, value in medians.items():
            if value is not None:
                self.medians[key][(family, measure)] = number(value)

    def get(self, key, family, measure):
        value = self.sums.get(key, {}).get(family, {}).get(measure)
        return Decimal(0) if value is None else number(value)

    def median(self, key, family, measure):
        if key in self.medians:
            return self.medians[key].get((family, measure))
        values = self.values.get(key, {}).get(family, {}).get(measure)
        return statistics.median(values) if values else None

    def median_items(self):
        """(key, family, measure, median) of every median with a value."""
        for key, medians in self.medians.items():
            for (family, measure), value in medians.items():
                if value is not None:
                    yield key, family, measure, value
        for key, families in self.values.items():
            if key in self.medians:
                continue
            for family, lists in families.items():
                for measure, values in lists.items():
                    if values:
                        yield key, family, measure, statistics.median(values)

    def families_at(self, key):
        """The families with rows at ``key``."""
        out = set(self.sums.get(key, ())) | set(self.values.get(key, ()))
        return out | {family for family, _ in self.medians.get(key, ())}

    def keys(self):
        return set(self.sums) | set(self.values) | set(self.medians)

    def prune(self):
        """Drop zero sums and families left empty: they compute only KPIs that read as
        absent (``_is_empty``), and the ledger does not keep them."""
        for key in list(self.sums):
            families = ledger.pruned(self.sums[key])
            if families:
                self.sums[key] = defaultdict(dict, families)
            else:
                del self.sums[key]
        return self


#: Families no family KPI reads but the ledger keeps: the owner timeline of an
#: incremental recompute (kpis.timeline.LedgerOwners) and the open pipeline of the
#: company-level KPIs (``CompanyKpis.open_pipeline``) read them from it.
LEDGER_ONLY = ("settled", "pipeline")


def _families_needed():
    breakdowns = defaultdict(set, {name: set() for name in LEDGER_ONLY})
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


def gather(grain, start_at, end_at, medians_of=None):
    """Every family's measures over [start_at, end_at), by period, slice and breakdown:
    one query per family (and breakdown type), rolled up into the slices by the
    database (PostgreSQL) or here (SQLite). With ``medians_of`` (family names): only
    the medians of those families."""
    if connection.vendor == "postgresql":
        return _gather_rolled_up(grain, start_at, end_at, medians_of).prune()
    return _gather_python(grain, start_at, end_at, medians_of).prune()


def _gather_python(grain, start_at, end_at, medians_of=None):
    teams = dict(User.objects.values_list("id", "team_id"))
    measures = Measures()
    for name, breakdown_types in _families_needed().items():
        family = FAMILIES[name]
        if medians_of is not None and (name not in medians_of or not family.medians):
            continue
        for breakdown_type in (None, *sorted(breakdown_types)) if medians_of is None else ():
            rows = family.aggregate(grain, start_at, end_at, breakdown_type)
            _add_sums(measures, name, breakdown_type, rows, teams)
        for row in family.median_values(grain, start_at, end_at):
            for key in slice_keys(row, teams):
                lists = measures.values[(row["_bucket"], key, "")][name]
                for m in family.medians:
                    value = row[f"_m_{m}"]
                    if value is not None:
                        lists[m].append(number(value))
    return measures


def contributions(deal_ids):
    """What the deals ``deal_ids`` alone add to the day ledger's sums: every family's
    measures of their rows, by day, slice and breakdown, whatever the day. The ledger's
    day sums are the sums of every deal's contribution (tests/kpis/test_contributions.py):
    the ground for applying a deal's change as the difference of its contributions
    (kpis.changes). Medians are not additive and are not given."""
    return _contributions(deal_ids, by_deal=False).get(None, Measures())


def contributions_by_deal(deal_ids):
    """{deal id: its ``contributions``} for each of ``deal_ids`` that has any, in the
    queries ``contributions`` makes for all of them together."""
    return _contributions(deal_ids, by_deal=True)


def _contributions(deal_ids, by_deal):
    """{deal id (``by_deal``) or None (all together): Measures} of ``deal_ids``: one
    query per family and breakdown."""
    if not deal_ids:
        return {}
    out = defaultdict(Measures)
    teams = dict(User.objects.values_list("id", "team_id"))
    queries = [
        (name, breakdown_type)
        for name, breakdown_types in _families_needed().items()
        for breakdown_type in (None, *sorted(breakdown_types))
    ]
    if connection.vendor == "postgresql":
        # Compiled once, all sent in one round trip (families.Prepared).
        results = run_prepared(
            [FAMILIES[name].of_deals_prepared(bt, by_deal) for name, bt in queries],
            sorted(deal_ids),
        )
    else:
        results = [FAMILIES[name].of_deals(deal_ids, bt, by_deal=by_deal) for name, bt in queries]
    for (name, breakdown_type), result in zip(queries, results, strict=True):
        rows = defaultdict(list)
        for row in result:
            rows[row.get("_deal")].append(row)
        for key, group in rows.items():
            _add_sums(out[key], name, breakdown_type, group, teams)
    return {key: measures.prune() for key, measures in out.items()}


def _add_sums(measures, name, breakdown_type, rows, teams):
    """Add a family's grouped ``rows`` (``Family.aggregate``, ``Family.of_deals``) to
    ``measures``, in every slice each belongs to (``teams``: each owner's team)."""
    for row in rows:
        breakdown = breakdown_key(breakdown_type, row.get("_breakdown"))
        for key in slice_keys(row, teams):
            for m in FAMILIES[name].measures:
                measures.add((row["_bucket"], key, breakdown), name, m, row[m])


def _gather_rolled_up(grain, start_at, end_at, medians_of=None):
    measures = Measures()
    members = team_members_of_all()  # read once for every family's team column
    for name, breakdown_types in _families_needed().items():
        family = FAMILIES[name]
        if medians_of is not None and (name not in medians_of or not family.medians):
            continue
        for bucket, slice_key, sums, medians in family.rolled_up(grain, start_at, end_at, members):
            key = (bucket, slice_key, "")
            if medians_of is None:
                measures.set_sums(key, name, sums)
            measures.set_medians(key, name, medians)
        if medians_of is None and breakdown_types:
            for bucket, slice_key, bt, value, sums in family.rolled_up_breakdowns(
                grain, start_at, end_at, sorted(breakdown_types), members
            ):
                measures.set_sums((bucket, slice_key, breakdown_key(bt, value)), name, sums)
    return measures


MEDIAN_FAMILIES = frozenset(name for name, family in FAMILIES.items() if family.medians)


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
    # One period more at the front: growth compares with the previous period.
    first = periods[0].previous()
    return snapshots(grain, periods, gather(grain, first.start_at, periods[-1].end_at), now)


#: The KPIs ``company.compute`` gives: every slice's, whatever the scope of a recompute.
COMPANY_COMPUTED = frozenset(k.code for k in KPIS if k.computed_by in ("company", "now"))

#: The KPIs read from the measures' medians alone: all a refresh of the larger
#: periods' medians can move (``store(only_medians=True)``).
MEDIAN_KPIS = frozenset(k.code for k in KPIS if k.median) | frozenset(company.MEDIAN_KPIS)


def snapshots(
    grain,
    periods,
    measures,
    now,
    slices=None,
    only_medians=False,
    families=None,
    breakdowns=None,
):
    """Unsaved snapshots of ``periods`` (sorted) from their ``measures`` (and those of
    each one's previous period). ``slices``: the KPIs of those slices only (the
    company-level ones of a team or the company read their members' rows, which a
    change of a member's deal puts in its scope with them);
    ``families`` (names): of those families only (``family_kpis``); ``breakdowns``
    (breakdown keys): of those slices' breakdowns, those only (``changed_breakdowns``).
    ``only_medians``: the KPIs read from medians alone (``MEDIAN_KPIS``), in ``slices``."""
    wanted = {p.start for p in periods}
    # The medians read no spend.
    spend = (
        {} if only_medians else spend_by_period(grain, periods[0].previous().start, periods[-1].end)
    )
    keys = {k for k in measures.keys() if k[0] in wanted}  # noqa: SIM118 (a method, not a dict)
    keys |= {(start, sl, "") for (start, sl) in spend if start in wanted}
    keys |= {(start, "company", "") for start in wanted}
    if slices is not None:
        keys = {k for k in keys if k[1] in slices}
    if breakdowns is not None:
        keys = {k for k in keys if not k[2] or k[2] in breakdowns}
    computed_at = timezone.now()
    by_family = _kpis_by_family()
    only = None if families is None else family_kpis(families)
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
            if only is not None and kpi.code not in only:
                continue
            if only_medians and not kpi.median:
                continue
            if breakdown_type and breakdown_type not in kpi.breakdowns:
                continue
            value, num, den, extra = family_value(kpi, measures, key, spend)
            out.append(
                SnapshotRow(
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
    if only_medians:
        rows = company.medians_only(grain, periods, measures, now, computed_at)
        out += [row for row in rows if slices is None or row.slice in slices]
    else:
        customers, pipeline = reads_customers(families), reads_pipeline(families)
        out += company.compute(
            grain, periods, measures, spend, now, computed_at, customers, pipeline, slices
        )
    # Stored sparsely: a row that says exactly what an absent row reads as (a count of
    # 0, a ratio of 0 ÷ 0) is not written (kpis/reading.py, ``empty``).
    return [row for row in out if not _is_empty(row)]


SPEND = object()  # marks a (period, slice) with marketing spend


@functools.cache
def _kpis_by_family():
    """Family name -> the family-computed KPIs that read it (the registry is fixed:
    built once)."""
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
    return {name: tuple(kpis) for name, kpis in out.items()}


def family_kpis(families):
    """The codes of the family-computed KPIs that read any of ``families``: all a
    change of those families' measures can move (a change of a deal moves its own)."""
    by_family = _kpis_by_family()
    return frozenset(kpi.code for name in families for kpi in by_family.get(name, ()))


def reads_customers(families):
    """Whether a recompute of ``families`` (None: every family) computes the customer
    KPIs (``company.CUSTOMER_KPIS``): a change of deals none of which is or was won
    moves none of them, and the customer timeline is not read."""
    return families is None or "won" in families


def reads_pipeline(families):
    """Whether a recompute of ``families`` (None: every family) computes the pipeline
    KPIs (``company.PIPELINE_KPIS``): of a deal's changes, only one of the open
    pipeline or of the won value (coverage's gap to target) moves them."""
    return families is None or bool({"pipeline", "won"} & set(families))


def changed_families(changed):
    """The families of ``changed`` ({day: {family: slices}}, ``ledger.replace_days``)."""
    return {
        name for families in changed.values() for name in families if name not in dirty.NOT_FAMILIES
    }


def changed_breakdowns(changed):
    """The breakdowns whose ledger rows moved on the days of ``changed`` (a scope of
    applied changes, ``dirty.BREAKDOWNS``), or None when a day's scope does not say
    (gathered, or stored before scopes said): then every breakdown of its slices."""
    if any(dirty.BREAKDOWNS not in families for families in changed.values()):
        return None
    return set().union(*(families[dirty.BREAKDOWNS] for families in changed.values()))


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
    return replace(KpiSnapshot.objects.filter(grain=grain, kpi__in=company.PIPELINE_KPIS), rows)


#: The quantum KpiSnapshot stores values at: a reading compares as the database keeps it.
STORED = Decimal(1).scaleb(-KpiSnapshot._meta.get_field("value").decimal_places)


def _stored(value):
    return None if value is None else Decimal(value).quantize(STORED)


def _reading(row):
    return (_stored(row.value), _stored(row.numerator), _stored(row.denominator), row.extra)


def write(grain, periods, rows, slices=None, kpis=None, families=None, breakdowns=None):
    """Make the snapshots of ``periods`` exactly ``rows``, writing only the rows whose
    reading changed (an incremental recompute changes the few slices of one deal).
    ``slices``: ``rows`` hold the KPIs of those slices only (``snapshots``), so only
    theirs are replaced; with ``families``, only those families' KPIs and the
    company-level ones that read them; with ``breakdowns`` (breakdown keys), of those
    breakdowns only; ``kpis`` (codes): those KPIs' rows only, in ``slices``. The
    computation only reads; the
    write transaction is kept short, so it never holds the database (SQLite's single
    writer lock, PostgreSQL row locks) while aggregating."""
    starts = [p.start for p in periods]
    stored = every = KpiSnapshot.objects.filter(grain=grain, period_start__in=starts)
    # Every company row carries the time of the recompute (``replace``), not only those
    # of the families it compares.
    stamped = every if families is not None else None
    if kpis is not None:
        stored = stored.filter(kpi__in=sorted(kpis))
        if slices is not None:
            stored = stored.filter(slice__in=sorted(slices))
    elif slices is not None:
        stored = stored.filter(slice__in=sorted(slices))
        if breakdowns is not None:
            stored = stored.filter(Q(breakdown="") | Q(breakdown__in=sorted(breakdowns)))
        if families is not None:
            computed = COMPANY_COMPUTED
            if not reads_customers(families):
                computed = computed - set(company.CUSTOMER_KPIS)
            if not reads_pipeline(families):
                computed = computed - set(company.PIPELINE_KPIS)
            stored = stored.filter(kpi__in=sorted(family_kpis(families) | computed))
    return replace(stored, rows, stamped)


def replace(stored, rows, stamped=None):
    """Make the snapshot rows of the queryset ``stored`` exactly ``rows`` (see write).
    ``stamped``: the rows whose company slice carries the time of the recompute
    (``stored`` when not given)."""
    fields = ("kpi", "period_start", "slice", "breakdown")
    with transaction.atomic():
        existing = {
            (kpi, start, s, b): (pk, (value, num, den, extra))
            for pk, kpi, start, s, b, value, num, den, extra in stored.values_list(
                "pk", *fields, "value", "numerator", "denominator", "extra"
            )
        }
        created, updated = [], []
        for row in rows:
            pk, reading = existing.pop(
                (row.kpi, row.period_start, row.slice, row.breakdown), (None, None)
            )
            if pk is None:
                created.append(row)
            elif _reading(row) != reading:
                updated.append((pk, row.value, row.numerator, row.denominator, row.extra))
        gone = [pk for pk, _ in existing.values()]
        for i in range(0, len(gone), 5000):
            KpiSnapshot.objects.filter(pk__in=gone[i : i + 5000]).delete()
        update_rows(KpiSnapshot, ["value", "numerator", "denominator", "extra"], updated)
        if rows:
            # The period's "computed at" (its newest row, reports.data.computed_at)
            # moves with every recompute: the company rows carry it; any other row
            # keeps the time its reading last changed.
            (stored if stamped is None else stamped).filter(slice="company").update(
                computed_at=rows[0].computed_at
            )
        if created:
            get = operator.attrgetter(*SNAPSHOT_ROW_FIELDS)
            insert_rows(KpiSnapshot, SNAPSHOT_ROW_FIELDS, [get(row) for row in created])
    return len(rows)


def adjacent_runs(periods):
    """Sorted periods grouped into runs of adjacent periods."""
    runs = []
    for period in periods:
        if runs and runs[-1][-1].end == period.start:
            runs[-1].append(period)
        else:
            runs.append([period])
    return runs


def changed_slices(changed):
    """The slices of ``changed`` ({day: {family: slices}}, ``ledger.replace_days``)."""
    return {
        s
        for families in changed.values()
        for name, slices in families.items()
        if name != dirty.BREAKDOWNS
        for s in slices
    }


def store_days(periods, now=None, before_from_ledger=False):
    """Recompute day periods from the deals: their snapshots, their ledger rows, and
    (through the ledger) the sums of every larger period containing them. Returns
    (rows written, {day: {family whose sums or medians changed: the slices where
    they did}}). Every slice's KPIs are computed: a deal's change alone is computed
    from the ledger instead (``store_days_from_ledger``)."""
    total, changed, gathered = 0, {}, []
    # Runs of adjacent days, each gathered in one query per family: a query's cost
    # follows the rows it reads (at 1M deals, 0.1 s for a day without events, 0.3 s
    # more for each busy day), so days in between are not filled in.
    for run in adjacent_runs(sorted(set(periods))):
        # Growth compares with the day before the run: gathered with it, or, with
        # ``before_from_ledger`` (an incremental recompute, its ledger built), read from
        # the ledger unless marked dirty (its rows there may be stale). A full or
        # one-period recompute gathers it: it repairs what the ledger has wrong.
        before = run[0].previous()
        from_ledger = before_from_ledger and not dirty.is_marked(before.start)
        first = run[0] if from_ledger else before
        measures, run_changed = changes.gather_days(
            [p.start for p in run],
            functools.partial(gather, Grain.DAY, first.start_at, run[-1].end_at),
        )
        if from_ledger:
            ledger.load(Grain.DAY, [before.start], measures)
        changed.update(run_changed)
        gathered.append((run, measures))
    # Every day's ledger rows are replaced before any snapshot is computed: the owner
    # timeline of an incremental recompute is read from them (timeline.LedgerOwners).
    for run, measures in gathered:
        rows = snapshots(Grain.DAY, run, measures, now or timezone.now())
        total += write(Grain.DAY, run, rows)
    return total, changed


def store_days_from_ledger(periods, changed, now=None):
    """The day snapshots of ``periods`` from their ledger rows, once the pending
    changes are applied to them (kpis.changes.apply_pending): the family KPIs of the
    slices ``changed`` names ({day: {family: slices}}, where a sum or a median may
    have moved), after those medians are taken again from the deals, and every
    company-level KPI. Returns the rows written."""
    medians, median_days = defaultdict(set), []
    for day, families in changed.items():
        moved = {f: keys for f, keys in families.items() if f in MEDIAN_FAMILIES}
        for family, keys in moved.items():
            medians[family] |= set(keys)
        if moved:
            median_days.append(Period(Grain.DAY, day))
    refresh_medians(Grain.DAY, median_days, dict(medians))
    slices, families = changed_slices(changed), changed_families(changed)
    breakdowns = changed_breakdowns(changed)
    total, now = 0, now or timezone.now()
    for run in adjacent_runs(sorted(set(periods))):
        measures = ledger.load(
            Grain.DAY,
            [p.start for p in run],
            Measures(),
            slices,
            families,
            totals_of=[run[0].previous().start],
            breakdowns=breakdowns,
        )
        rows = snapshots(
            Grain.DAY, run, measures, now, slices, families=families, breakdowns=breakdowns
        )
        total += write(Grain.DAY, run, rows, slices, families=families, breakdowns=breakdowns)
    return total


def refresh_ledger(first_day, last_day):
    """Recompute the ledger's day rows of [first_day, last_day] from the deals (no
    snapshots). Returns {day: families whose measures changed}."""
    start_at = Period(Grain.DAY, first_day).start_at
    end_at = Period(Grain.DAY, last_day).end_at
    days = [p.start for p in periods_between(Grain.DAY, first_day, last_day)]
    return changes.gather_days(days, functools.partial(gather, Grain.DAY, start_at, end_at))[1]


def refresh_ledger_for(periods):
    """Recompute into the ledger the days of ``periods`` (sorted) and of the period
    before the first (growth compares with it). Returns what ``refresh_ledger`` does."""
    return refresh_ledger(periods[0].previous().start, periods[-1].end - datetime.timedelta(days=1))


#: Up to this many slices of a family, an incremental recompute takes the medians of
#: those slices only (``Family.slice_medians``: one filtered aggregate each); with more
#: (a batch of many deals), every slice at once (``Family.rolled_up``).
SLICE_MEDIANS_MAX = 16


def refresh_medians(grain, periods, families=MEDIAN_FAMILIES):
    """Take the medians of ``families`` for ``periods`` from the deals into the ledger.
    ``families``: names (every slice), or {name: slice keys} (only those slices: the
    ones whose day rows changed, kpis.ledger.replace_days)."""
    slices = None
    if isinstance(families, dict):
        slices = {name: set(keys) for name, keys in families.items() if name in MEDIAN_FAMILIES}
    families = set(families) & MEDIAN_FAMILIES
    if not periods or not families:
        return
    fresh = Measures()
    by_slice = slices is not None and connection.vendor == "postgresql"
    for run in adjacent_runs(sorted(set(periods))):
        start_at, end_at = run[0].start_at, run[-1].end_at
        if by_slice:
            _slice_medians(grain, start_at, end_at, slices, fresh)
            continue
        part = gather(grain, start_at, end_at, medians_of=families)
        fresh.medians.update(part.medians)
        fresh.values.update(part.values)
    ledger.refresh_medians(grain, [p.start for p in periods], families, fresh, slices=slices)


def refresh_larger_medians(periods_by_grain):
    """Take every median of every slice of ``periods_by_grain`` ({grain: sorted
    periods}, each a run of adjacent periods) from the deals into the ledger: on
    PostgreSQL one query per family for all the grains (``Family.medians_by_grains``),
    which reads the rows once instead of once per grain. A full recompute, a ledger
    build."""
    periods_by_grain = {g: p for g, p in periods_by_grain.items() if p}
    if connection.vendor != "postgresql" or len(periods_by_grain) < 2:
        for grain, periods in periods_by_grain.items():
            refresh_medians(grain, periods)
        return
    grains = list(periods_by_grain)
    start_at = min(periods[0].start_at for periods in periods_by_grain.values())
    end_at = max(periods[-1].end_at for periods in periods_by_grain.values())
    fresh = {grain: Measures() for grain in grains}
    members = team_members_of_all()
    for name in sorted(MEDIAN_FAMILIES):
        rows = FAMILIES[name].medians_by_grains(grains, start_at, end_at, members)
        for grain, bucket, key, medians in rows:
            fresh[grain].set_medians((bucket, key, ""), name, medians)
    for grain, periods in periods_by_grain.items():
        ledger.refresh_medians(grain, [p.start for p in periods], MEDIAN_FAMILIES, fresh[grain])


def _slice_medians(grain, start_at, end_at, slices, fresh):
    """Add to ``fresh`` the medians of each family's ``slices`` over the range."""
    members = team_members_of_all()
    for name, keys in slices.items():
        family = FAMILIES[name]
        if len(keys) <= SLICE_MEDIANS_MAX:
            rows = family.slice_medians(grain, start_at, end_at, keys, members)
        else:
            rows = (
                (bucket, key, medians)
                for bucket, key, _, medians in family.rolled_up(grain, start_at, end_at, members)
            )
        for bucket, key, medians in rows:
            fresh.set_medians((bucket, key, ""), name, medians)


def store(
    grain,
    periods,
    now=None,
    medians_of=MEDIAN_FAMILIES,
    days_fresh=False,
    slices=None,
    only_medians=False,
    families=None,
    breakdowns=None,
):
    """Replace the snapshots of ``periods``: same input, same rows. A day is computed
    from the deals (``store_days``); a larger period from its ledger row, whose sums
    its days keep current, after taking again the medians of ``medians_of``. Unless
    the caller has just recomputed them (``days_fresh``), the days of the periods (and
    of the period before the first) are recomputed into the ledger first. ``slices``:
    the family KPIs of those slices only (``snapshots``); ``families``: of those
    families only (the changes of deals, ``recompute_days``), and of their breakdowns
    ``breakdowns`` only (``changed_breakdowns``). ``only_medians``: only the
    KPIs read from medians (``MEDIAN_KPIS``), when nothing else has moved."""
    periods = sorted(set(periods))
    if not periods:
        return 0
    if Grain(grain) == Grain.DAY:
        return store_days(periods, now)[0]
    if not days_fresh:
        refresh_ledger_for(periods)
    refresh_medians(grain, periods, medians_of)
    starts = {p.start for p in periods}
    # Growth reads the company-level totals of the period before.
    before = () if only_medians else {p.previous().start for p in periods}
    measures = ledger.load(
        grain, starts, Measures(), slices, families, totals_of=before, breakdowns=breakdowns
    )
    now = now or timezone.now()
    rows = snapshots(grain, periods, measures, now, slices, only_medians, families, breakdowns)
    kpis = MEDIAN_KPIS if only_medians else None
    return write(grain, periods, rows, slices, kpis, families, breakdowns)
