"""A deal's change applied as the difference of its contributions (docs/benchmarks.md,
"Why the two goals need a different engine", step 2).

The ledger's day rows are the sums of every deal's contribution
(``compute.contributions``). A change keeps, before it writes anything, what the
ledger holds for its deal (``capture``), and the worker adds the difference between
the deal's contribution now and that one to the day rows and, through them, to the
larger periods (``apply_pending``): it reads the changed deals alone, not every row
of their days.

What holds at every commit: for every day, slice and breakdown, the ledger's sums
are the sum, over the deals, of the pending ``before`` of a deal whose change is
pending and of the contribution of any other deal. Who keeps it so:

- A change, under its deal's row lock: with no change pending, the deal's
  contribution so far is what the ledger holds; it is kept as the pending row's
  ``before``. With one pending, that one's ``before`` stays (it is the ledger's).
- The worker, under the deals' row locks: after - before added, the pending rows
  deleted, in one transaction.
- A day gathered from the deals (``gather_days``: a whole-day mark, a full or
  one-period recompute) reads them in one snapshot. When it replaces the day rows,
  every pending change its snapshot saw gets, for those days, the ``before`` the
  snapshot read of its deal; a change committed after the snapshot kept as its
  ``before`` what the snapshot read. No change may be applied in between: on
  PostgreSQL the gather holds an advisory lock shared from before its snapshot to
  its commit, and the worker takes it exclusively; SQLite runs one writer at a time,
  and the gather takes the write lock before it reads.

A write that keeps no ``before`` (a bulk import, a change outside the domain
functions) marks its days for every slice (``dirty.mark_deal``): they are gathered
again, which is always right, only slower.
"""

import datetime
from collections import defaultdict
from contextlib import contextmanager

from django.db import connection, transaction

from funnel.bulk import update_rows
from funnel.models import Deal
from kpis import dirty, ledger, opennow
from kpis.models import PendingChange
from kpis.periods import Grain, today

#: The advisory lock (PostgreSQL) a gather holds shared and the worker exclusively.
LOCK_KEY = 0x4C656A656B  # "Lejek"

#: Pending changes applied per transaction.
APPLY_BATCH = 500


# --- encoding -------------------------------------------------------------------------


def encode(measures):
    """A deal's contribution (a ``compute.Measures`` at day grain) as JSON rows."""
    return _rows(measures.sums)


def _rows(sums, days=None):
    """{(day, slice, breakdown): families} as JSON rows (of ``days`` only, if given)."""
    return [
        [day.isoformat(), slice_, breakdown, ledger._encode_sums(families)]
        for (day, slice_, breakdown), families in sorted(sums.items())
        if families and (days is None or day in days)
    ]


def decode(rows):
    """``encode``'s rows as {(day, slice, breakdown): {family: {measure: value}}}."""
    return {
        (datetime.date.fromisoformat(day), slice_, breakdown): ledger._decode_sums(families)
        for day, slice_, breakdown, families in rows
    }


def _sums(measures):
    return {key: ledger.pruned(families) for key, families in measures.sums.items()}


# --- the writer's side ----------------------------------------------------------------


def capture(deal_pk):
    """Inside a change's transaction, before it writes anything: lock the deal and
    keep what the ledger holds for it, unless a change of it is pending already."""
    from kpis.compute import contributions

    if deal_pk is None or dirty.collecting():
        return
    list(Deal.objects.select_for_update().filter(pk=deal_pk).values_list("pk", flat=True))
    if PendingChange.objects.filter(deal_id=deal_pk).exists():
        return
    before = encode(contributions([deal_pk]))
    PendingChange.objects.bulk_create(
        [PendingChange(deal_id=deal_pk, before=before, before_open=opennow.state(deal_pk))],
        ignore_conflicts=True,
    )


def created(deal_pk):
    """A deal just created: the ledger and the open deals now hold nothing of it."""
    if not dirty.collecting():
        PendingChange.objects.bulk_create(
            [PendingChange(deal_id=deal_pk, before=[], before_open=[])], ignore_conflicts=True
        )


def is_pending(deal_pk):
    return PendingChange.objects.filter(deal_id=deal_pk).exists()


# --- the locks ------------------------------------------------------------------------


def _postgresql():
    return connection.vendor == "postgresql"


@contextmanager
def _session_lock(shared):
    """PostgreSQL: hold the gathers' lock, ``shared`` (a gather) or exclusively (a
    count of the open deals now: no worker applies and no gather is between its
    snapshot and its replacement). A session lock: it spans the snapshot's
    transaction and the replacement's."""
    kind = "_shared" if shared else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_advisory_lock{kind}(%s)", [LOCK_KEY])
    try:
        yield
    finally:
        if connection.connection is not None:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT pg_advisory_unlock{kind}(%s)", [LOCK_KEY])


def _exclusive():
    """Inside a transaction: no gather is between its snapshot and its replacement
    until the transaction ends (PostgreSQL; SQLite's write lock does it there)."""
    if _postgresql():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])


@contextmanager
def _snapshot():
    """PostgreSQL: one snapshot for every read inside, a read-only repeatable-read
    transaction (inside a caller's transaction, that transaction's reads)."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


# --- a gather ---------------------------------------------------------------------------


def _seen():
    """The pending changes this snapshot sees, with what it reads of their deals:
    {pending row pk: {(day, slice, breakdown): families}}."""
    from kpis.compute import contributions_by_deal

    rows = dict(PendingChange.objects.values_list("deal_id", "pk"))
    if not rows:
        return {}
    read = contributions_by_deal(sorted(rows))
    return {pk: _sums(read[deal_id]) if deal_id in read else {} for deal_id, pk in rows.items()}


def gather_days(days, read):
    """Replace the ledger's rows of ``days`` with ``read()`` (a ``compute.Measures``
    gathered from the deals), read in one snapshot with the pending changes it saw,
    whose ``before`` of those days become what it read. Returns (measures, {day:
    {family: slices}} whose rows changed, as ``ledger.replace_days``)."""
    days = sorted(set(days))
    if not _postgresql():
        with transaction.atomic():
            ledger._take()
            measures, seen = read(), _seen()
            return measures, _replace(days, measures, seen)
    with _session_lock(shared=True):
        with _snapshot():
            measures, seen = read(), _seen()
        with transaction.atomic():
            return measures, _replace(days, measures, seen)


def _replace(days, measures, seen):
    changed = ledger.replace_days(days, measures)
    if not seen:
        return changed
    wanted, moved = set(days), []
    rows = PendingChange.objects.filter(pk__in=sorted(seen)).select_for_update()
    for pk, stored in rows.values_list("pk", "before"):
        kept = [r for r in stored if datetime.date.fromisoformat(r[0]) not in wanted]
        before = sorted(kept + _rows(seen[pk], wanted), key=lambda r: r[:3])
        if before != stored:
            moved.append((pk, before))
    update_rows(PendingChange, ["before"], moved)
    return changed


# --- a count of the open deals now ----------------------------------------------------


def count_open(read, as_of, limits):
    """Replace the open deals now (kpis.opennow) with ``read()`` (as
    ``company.open_now``, counted at ``as_of`` with the stall ``limits``), read in one
    snapshot with the pending changes' deals, whose ``before_open`` become what it
    read. Returns what it read. No change is applied in between: on PostgreSQL the
    count holds the worker's lock; SQLite runs one writer at a time."""
    if not _postgresql() or connection.in_atomic_block:
        with transaction.atomic():
            _exclusive()
            ledger._take()
            per_slice = read()
            opennow.replace(per_slice, as_of, limits, opennow.pending_states())
        return per_slice
    with _session_lock(shared=False):
        with _snapshot():
            per_slice, seen = read(), opennow.pending_states()
        with transaction.atomic():
            opennow.replace(per_slice, as_of, limits, seen)
    return per_slice


# --- the worker's side ------------------------------------------------------------------


def apply_pending(claimed_days=(), limit=APPLY_BATCH):
    """Apply every pending change: add each deal's contribution now minus its
    ``before`` to the ledger (day rows and larger periods). Returns the scope, {day:
    {family: slices}} of the rows whose sums moved (a median only moves with them:
    every family with medians has one row per deal), and under ``dirty.BREAKDOWNS`` the
    breakdowns whose rows moved. Days not among ``claimed_days`` (the caller's
    marks, which will compute the returned scope) are marked dirty with their scope."""
    from kpis.compute import contributions_by_deal

    scope = {}
    claimed_days = set(claimed_days)
    while True:
        with transaction.atomic():
            _exclusive()
            ledger._take()
            rows = list(
                PendingChange.objects.order_by("deal_id").values_list(
                    "pk", "deal_id", "before", "before_open"
                )[:limit]
            )
            if not rows:
                break
            ids = [deal_id for _, deal_id, _, _ in rows]
            # A change of these deals in progress finishes first: what it changes is
            # in "after", and its pending row (the same one) is deleted with the others.
            list(Deal.objects.select_for_update().filter(pk__in=ids).order_by("pk").values("pk"))
            after = contributions_by_deal(ids)
            delta, touched = {}, defaultdict(lambda: defaultdict(set))
            now_slices = touched[today()][dirty.DEALS]  # the open deals now: today's
            # The open deals now, by difference too while their count holds (a pending
            # row that kept no state makes it count again).
            counted = opennow.as_counted()
            if counted is not None and any(r[3] is None for r in rows):
                opennow.forget()
                counted = None
            if counted is not None:
                cutoffs = opennow.stall_cutoffs(*counted)  # stalled as of the count
                open_after = opennow.states(ids)
            open_delta = {}
            for _, deal_id, before, before_open in rows:
                new = _sums(after[deal_id]) if deal_id in after else {}
                old = decode(before)
                for key in set(new) | set(old):
                    diff = ledger._difference(new.get(key, {}), old.get(key, {}))
                    if diff:
                        ledger._add_into(delta.setdefault(key, {}), diff)
                        if key[2]:
                            touched[key[0]][dirty.BREAKDOWNS].add(key[2])
                    # A family with medians has one row per deal (kpis.families): its
                    # sums unchanged, so is the deal's value, and every median.
                    for family in diff:
                        touched[key[0]][family].add(key[1])
                    # A won deal moves the customer KPIs by its company too, which is
                    # no measure (kpis.company.CUSTOMER_KPIS).
                    if "won" in new.get(key, {}) or "won" in old.get(key, {}):
                        touched[key[0]]["won"].add(key[1])
                if counted is None:
                    # Its open deals now may move with no sum (a lead's value, a note):
                    # every slice of the deal, counted again from the deals.
                    now_slices.update(key[1] for key in (*new, *old) if not key[2])
                else:
                    opennow.add_into(
                        open_delta,
                        opennow.difference(before_open, open_after.get(deal_id, []), cutoffs),
                    )
            # The slices whose open deals now moved.
            now_slices.update(open_delta)
            opennow.add(open_delta)
            for families in touched.values():
                families.setdefault(dirty.BREAKDOWNS, set())  # says so when none moved
            for grain in (Grain.DAY, *ledger.LARGER):
                ledger._add(grain, delta)
            PendingChange.objects.filter(pk__in=[r[0] for r in rows]).delete()
            dirty.mark_scope({d: f for d, f in touched.items() if d not in claimed_days})
        scope = dirty.merged_scopes(scope, touched)
    return scope
