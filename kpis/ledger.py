"""The measure ledger: every family's additive measures stored per period, slice and
breakdown (``PeriodMeasures``), so that a change recomputes days, not years.

Day rows are computed from the deals. A week, month, quarter or year is a union of
whole local days, so each of its sums is the sum of its days' sums: when a day is
recomputed, the difference between its new and its stored measures is added to every
larger period containing it, in the same transaction as the day rows are replaced.
Sums are kept exact (counts, Decimal money, durations in microseconds), so a period
built from its days' changes equals one aggregated at once, to the last digit.

Medians are not additive: each row keeps the medians of its period, taken from the
deals, and an incremental recompute takes again only those of the families whose
measures changed (``refresh_medians``).

Writers take ``LedgerState``'s row first (``_take``), so two workers never add the
same day's change twice. A full recompute rewrites the day rows from the deals, which
repairs anything: a team change, an edit that marked nothing, a lost row.
"""

import datetime
from collections import defaultdict
from decimal import Decimal

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from funnel.bulk import insert_rows, update_rows
from kpis.models import LedgerState, PeriodMeasures
from kpis.periods import Grain, start_of

LARGER = (Grain.WEEK, Grain.MONTH, Grain.QUARTER, Grain.YEAR)

#: Filter larger rows by slice when a change touches at most this many slices (one
#: deal touches six); a full build reads the periods' rows whole.
SLICE_FILTER_MAX = 200


# --- exact values ---------------------------------------------------------------------

MICROSECONDS_PER_DAY = Decimal(86_400_000_000)


def microseconds(delta):
    """A duration as whole microseconds: sums of day fractions stay exact."""
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode(value):
    """A JSON form that decodes to the same exact value."""
    if isinstance(value, datetime.timedelta):
        return {"us": microseconds(value)}
    if isinstance(value, Decimal):
        return str(value)
    return value


def decode(value):
    if isinstance(value, dict):
        return datetime.timedelta(microseconds=value["us"])
    if isinstance(value, str):
        return Decimal(value)
    return value


def is_zero(value):
    """0, Decimal 0 (at any exponent) and a zero duration: all false."""
    return not value


def add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def subtract(a, b):
    if b is None:
        return a
    if a is None:
        return -b
    return a - b


def pruned(families):
    """``{family: {measure: value}}`` without zero values and empty families: a sum of
    0 reads as an absent one (kpis.compute.Measures.get), and a family with nothing
    left computes only empty KPIs."""
    out = {}
    for family, sums in families.items():
        kept = {m: v for m, v in sums.items() if v is not None and not is_zero(v)}
        if kept:
            out[family] = kept
    return out


def _difference(new, old):
    out = {}
    for family in set(new) | set(old):
        a, b = new.get(family, {}), old.get(family, {})
        diff = {m: subtract(a.get(m), b.get(m)) for m in set(a) | set(b)}
        diff = {m: v for m, v in diff.items() if not is_zero(v)}
        if diff:
            out[family] = diff
    return out


def _add_into(target, delta):
    """Add ``delta`` ({family: {measure: change}}) to ``target`` in place; ``delta``'s
    dicts are copied, never shared (it may be added to several targets)."""
    for family, sums in delta.items():
        into = target.get(family)
        if into is None:
            target[family] = dict(sums)
            continue
        for m, v in sums.items():
            into[m] = add(into.get(m), v)


def _plus(families, delta):
    out = {family: dict(sums) for family, sums in families.items()}
    _add_into(out, delta)
    return pruned(out)


def _encode_sums(families):
    return {f: {m: encode(v) for m, v in sums.items()} for f, sums in families.items()}


def _decode_sums(families):
    return {f: {m: decode(v) for m, v in sums.items()} for f, sums in families.items()}


def _median_families(medians):
    return {name.split(".", 1)[0] for name in medians}


# --- the lock and the build flag --------------------------------------------------------


def _take():
    """Inside a transaction: serialise with every other ledger writer."""
    now = timezone.now()
    if not LedgerState.objects.filter(pk=1).update(taken_at=now):
        LedgerState.objects.get_or_create(pk=1)
        LedgerState.objects.filter(pk=1).update(taken_at=now)


def is_built():
    return LedgerState.objects.filter(pk=1, built_at__isnull=False).exists()


def set_built():
    with transaction.atomic():
        _take()
        LedgerState.objects.filter(pk=1).update(built_at=timezone.now())


# --- reading --------------------------------------------------------------------------


#: The rows the company-level KPIs read in every slice they have: the totals of the
#: company, each team and each rep.
PEOPLE_TOTALS = Q(breakdown="") & (
    Q(slice="company") | Q(slice__startswith="team:") | Q(slice__startswith="rep:")
)


def load(grain, starts, measures, slices=None, families=None, totals_of=(), breakdowns=None):
    """Add the stored sums and medians of the periods starting at ``starts`` to
    ``measures`` (a kpis.compute.Measures). ``slices``: the rows of those slices, and
    the totals the company-level KPIs read (``PEOPLE_TOTALS``), only; ``families``:
    of the breakdowns' rows, those holding any of those families only. ``totals_of``:
    more period starts, whose ``PEOPLE_TOTALS`` alone are read (a period before,
    which only the company-level KPIs' growth compares with). ``breakdowns``
    (breakdown keys): of the breakdowns' rows, those only."""
    wanted = Q(period_start__in=sorted(set(starts)))
    if slices is not None:
        wanted &= Q(slice__in=sorted(slices)) | PEOPLE_TOTALS
    if families is not None:
        holding = Q(sums__has_any_keys=sorted(families)) if families else Q(pk__in=[])
        wanted &= Q(breakdown="") | holding
    if breakdowns is not None:
        wanted &= Q(breakdown="") | Q(breakdown__in=sorted(breakdowns))
    totals = Q(period_start__in=sorted(set(totals_of) - set(starts))) & PEOPLE_TOTALS
    rows = PeriodMeasures.objects.filter(wanted | totals, grain=grain)
    for start, slice_, breakdown, sums, medians in rows.values_list(
        "period_start", "slice", "breakdown", "sums", "medians"
    ):
        key = (start, slice_, breakdown)
        for family, values in _decode_sums(sums).items():
            measures.sums[key][family] = values
        for name, value in medians.items():
            family, measure = name.split(".", 1)
            measures.medians[key][(family, measure)] = Decimal(value)
    return measures


# --- writing --------------------------------------------------------------------------


#: The fields of a new row, as ``_new_row`` gives them.
ROW_FIELDS = ("grain", "period_start", "slice", "breakdown", "sums", "medians")


def _new_row(grain, key, sums=None, medians=None):
    start, slice_, breakdown = key
    return (grain, start, slice_, breakdown, _encode_sums(sums or {}), medians or {})


def _insert(rows):
    if rows:
        insert_rows(PeriodMeasures, ROW_FIELDS, rows, batch_size=2000)


def replace_days(days, measures):
    """Store the day measures of ``days`` from ``measures`` (gathered at day grain from
    the deals) and add each day's change to the larger periods containing it. Returns
    {day: {family whose sums or medians changed: the slices where they did}}."""
    days = sorted(set(days))
    wanted = set(days)
    new = {}
    for key, families in measures.sums.items():
        if key[0] in wanted:
            families = pruned(families)
            if families:
                new[key] = [families, {}]
    for key, family, measure, value in measures.median_items():
        if key[0] in wanted:
            new.setdefault(key, [{}, {}])[1][f"{family}.{measure}"] = str(value)
    changed = defaultdict(lambda: defaultdict(set))
    with transaction.atomic():
        _take()
        old = {
            (start, s, b): (pk, _decode_sums(sums), medians)
            for pk, start, s, b, sums, medians in PeriodMeasures.objects.filter(
                grain=Grain.DAY, period_start__in=days
            ).values_list("pk", "period_start", "slice", "breakdown", "sums", "medians")
        }
        delta, gone, created = {}, [], []
        for key in set(old) | set(new):
            pk, old_sums, old_medians = old.get(key, (None, {}, {}))
            new_sums, new_medians = new.get(key, ({}, {}))
            diff = _difference(new_sums, old_sums)
            moved = {
                name
                for name in set(old_medians) | set(new_medians)
                if old_medians.get(name) != new_medians.get(name)
            }
            if not diff and not moved:
                continue
            if diff:
                delta[key] = diff
            for family in {*diff, *_median_families(moved)}:
                changed[key[0]][family].add(key[1])
            if pk is not None:
                gone.append(pk)
            if key in new:
                created.append(_new_row(Grain.DAY, key, new_sums, new_medians))
        for i in range(0, len(gone), 2000):
            PeriodMeasures.objects.filter(pk__in=gone[i : i + 2000]).delete()
        _insert(created)
        for grain in LARGER:
            _add(grain, delta)
    return {day: dict(families) for day, families in changed.items()}


def _add(grain, delta):
    """Add day changes ``{(day, slice, breakdown): {family: {measure: change}}}`` to the
    ``grain`` periods containing those days."""
    totals, starts = {}, {}
    for (day, slice_, breakdown), families in delta.items():
        start = starts.get(day)
        if start is None:
            start = starts[day] = start_of(grain, day)
        # Added in place: a full build adds a year of days to each row.
        _add_into(totals.setdefault((start, slice_, breakdown), {}), families)
    if not totals:
        return
    rows = PeriodMeasures.objects.filter(
        grain=grain, period_start__in=sorted({k[0] for k in totals})
    )
    slices = {k[1] for k in totals}
    if len(slices) <= SLICE_FILTER_MAX:
        # A few deals' changes: their slices' rows, of their breakdowns only.
        breakdowns = {k[2] for k in totals}
        rows = rows.filter(slice__in=sorted(slices), breakdown__in=sorted(breakdowns))
    existing = {
        (start, slice_, breakdown): (pk, sums, bool(medians))
        for pk, start, slice_, breakdown, sums, medians in rows.values_list(
            "pk", "period_start", "slice", "breakdown", "sums", "medians"
        )
    }
    updated, created, gone = [], [], []
    for key, change in totals.items():
        change = pruned(change)
        row = existing.get(key)
        if row is None:
            if change:
                created.append(_new_row(grain, key, change))
            continue
        pk, stored, has_medians = row
        sums = _plus(_decode_sums(stored), change)
        if not sums and not has_medians:
            gone.append(pk)
        else:
            updated.append((pk, _encode_sums(sums)))
    PeriodMeasures.objects.filter(pk__in=gone).delete()
    update_rows(PeriodMeasures, ["sums"], updated)
    _insert(created)


def refresh_medians(grain, starts, families, measures, slices=None):
    """Replace the medians of ``families`` in the ``grain`` periods starting at
    ``starts`` with those of ``measures`` (taken from the deals); with ``slices``
    ({family: slice keys}), only in those slices (the others are kept as stored)."""
    starts = sorted(set(starts))
    if not starts or not families:
        return

    def replaced(family, slice_):
        return family in families and (slices is None or slice_ in slices.get(family, ()))

    fresh = defaultdict(dict)
    for key, family, measure, value in measures.median_items():
        if key[0] in starts and replaced(family, key[1]):
            fresh[key][f"{family}.{measure}"] = str(value)
    with transaction.atomic():
        _take()
        rows = PeriodMeasures.objects.filter(grain=grain, period_start__in=starts, breakdown="")
        if slices is not None:
            rows = rows.filter(slice__in=sorted(set().union(*slices.values())))
        existing = {(r.period_start, r.slice, r.breakdown): r for r in rows}
        updated, created, gone = [], [], []
        for key in set(existing) | set(fresh):
            row = existing.get(key)
            kept = {}
            if row is not None:
                kept = {
                    name: v
                    for name, v in row.medians.items()
                    if not replaced(name.split(".", 1)[0], key[1])
                }
            medians = {**kept, **fresh.get(key, {})}
            if row is None:
                created.append(_new_row(grain, key, medians=medians))
            elif medians != row.medians:
                if not medians and not row.sums:
                    gone.append(row.pk)
                else:
                    row.medians = medians
                    updated.append(row)
        PeriodMeasures.objects.filter(pk__in=gone).delete()
        update_rows(PeriodMeasures, ["medians"], [(row.pk, row.medians) for row in updated])
        _insert(created)
