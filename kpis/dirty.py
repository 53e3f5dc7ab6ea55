"""Dirty marks: which local days need their KPIs recomputed.

Every transition and edit marks, in its own transaction, the days its deal's KPIs
depend on (its stage stamps, outcomes, offers, first activity, expected close date,
and today for the "now" KPIs). A task enqueued on commit recomputes them soon; the
periodic sweep recomputes whatever is still marked, so a lost message only delays a
number (pitfalls.md, "Keeping KPIs fresh").
"""

import contextlib
import datetime
import logging
import os
import threading
import time
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from funnel.stages import STAMP_FIELDS
from kpis.models import DirtyDay, StaleMedian
from kpis.periods import local_date, today

log = logging.getLogger(__name__)

#: How long a worker may hold a claimed mark before another may take it over: longer
#: than the slowest recompute of one batch, short enough that a killed worker's marks
#: are swept again soon.
CLAIM_LEASE = datetime.timedelta(seconds=settings.LEJEK_DIRTY_LEASE_SECONDS)


def _day(value):
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return local_date(value)
    return value


def mark_days(days: Iterable, whole=True):
    """Mark ``days`` (dates or datetimes) dirty. Each new mark gets a new generation,
    so a recompute that started before it will not clear it. ``whole``: every slice of
    the days' periods is recomputed; a deal's change (``whole=False``) moves only the
    slices whose ledger rows it changes, and never narrows a whole mark."""
    days = sorted({d for d in map(_day, days) if d is not None})
    if not days:
        return
    now = timezone.now()
    generation = time.time_ns()
    DirtyDay.objects.bulk_create(
        [DirtyDay(day=d, generation=generation, dirtied_at=now, whole=whole) for d in days],
        update_conflicts=True,
        unique_fields=["day"],
        update_fields=["generation", "dirtied_at", *(["whole"] if whole else [])],
    )
    _enqueue_on_commit()


#: A scope's entry, beside its families, listing the breakdowns (``breakdown_key``s:
#: "source:web") whose ledger rows the applied changes moved on the day, whatever the
#: family or slice: those changes move no other breakdown's KPIs
#: (``compute.changed_breakdowns``).
BREAKDOWNS = "~breakdowns"


#: A scope's entry, on today, listing the slices whose open deals now (open deals and
#: value per stage, stalled deals; kpis.opennow) the applied changes moved, whether or
#: not a sum moved (a lead's value, a note move no family's sum): only the touched
#: slices' company-level KPIs are computed (``compute.snapshots``). While the open
#: deals now are not counted, every slice of every changed deal.
DEALS = "~deals"

#: The scope's entries that are no family.
NOT_FAMILIES = (BREAKDOWNS, DEALS)


def merged_scopes(*scopes):
    """{day: {family: set of slices}}: every one of ``scopes`` (the same shape, any
    iterable of slices) together."""
    out = {}
    for scope in scopes:
        for day, families in scope.items():
            into = out.setdefault(day, {})
            for family, slices in families.items():
                into.setdefault(family, set()).update(slices)
    return out


def mark_scope(scope):
    """Mark ``scope``'s days ({day: {family: slices}}: where an applied change moved
    the ledger's rows, kpis.changes) dirty for those slices, each added to the day's
    ``DirtyDay.scope``: one upsert, the marked rows locked while their scopes merge."""
    if not scope:
        return
    days = sorted(scope)
    now, generation = timezone.now(), time.time_ns()
    rows = DirtyDay.objects.select_for_update().filter(day__in=days).order_by("day")
    stored = dict(rows.values_list("day", "scope"))
    merged = merged_scopes(stored, scope)
    DirtyDay.objects.bulk_create(
        [
            DirtyDay(
                day=day,
                whole=False,
                generation=generation,
                dirtied_at=now,
                scope={f: sorted(s) for f, s in sorted(merged[day].items())},
            )
            for day in days
        ],
        # A marked day keeps its ``whole``; a day marked by a change since the rows
        # were read has no scope of its own yet (``mark_days`` never writes one).
        update_conflicts=True,
        unique_fields=["day"],
        update_fields=["scope", "generation", "dirtied_at"],
    )
    _enqueue_on_commit()


def days_since(moment):
    """Every day from ``moment``'s to today: the company KPIs that look at a moment
    (open opportunities at a period's start, active reps, trailing 12 months, active
    customers) change for every period after a back-dated event. An event entered now
    gives just today."""
    first, last = _day(moment), today()
    if first is None or first >= last:
        return [last]
    return [first + datetime.timedelta(days=n) for n in range((last - first).days + 1)]


def _earliest(*moments):
    """The earliest of ``moments`` that are set (None if none is)."""
    return min((m for m in moments if m is not None), default=None)


def deal_days(deal, *also, since=None):
    """The days a deal's KPIs depend on: every stamp and outcome, its offers' sending
    and responses, its activities, its expected close date, and every day from its
    latest event (or ``since``, when earlier) to today."""
    days = [getattr(deal, f) for f in STAMP_FIELDS]
    days += [deal.won_at, deal.lost_at, deal.expected_close_date, *also]
    days += days_since(_earliest(deal.last_event_at, since))
    if deal.pk:
        for sent_at, responded_at in deal.offers.values_list("sent_at", "responded_at"):
            days += [sent_at, responded_at]
        days += list(deal.activities.values_list("held_at", flat=True))
    return days


def mark_deal(deal, *also, since=None):
    """Mark the days of ``deal``'s change. A change that kept what the ledger held for
    the deal (``kpis.changes.capture``) is applied as its difference, and moves only
    the slices it touches; any other gathers its days again, every slice."""
    batch = getattr(_batch, "marks", None)
    if batch is not None:
        batch["deals"].add(deal.pk)
        batch["days"].update(d for d in map(_day, also) if d is not None)
        # Every day from the earliest latest event any mark saw to today, as the marks
        # one by one would give: a deal created back-dated (an import) is marked from
        # its creation, not from the latest event its last write left.
        batch["since"] = _earliest(batch["since"], deal.last_event_at, since)
        return
    from kpis.changes import is_pending

    mark_days(deal_days(deal, *also, since=since), whole=not is_pending(deal.pk))


_batch = threading.local()


def collecting():
    """Whether the marks are being collected (``batched``): an import, whose days are
    gathered again, keeps no deal's ``before``."""
    return getattr(_batch, "marks", None) is not None


@contextlib.contextmanager
def batched():
    """Collect the marks of many writes (an import) and write them once, when the block
    ends without an error, inside the caller's transaction: one pass over the deals'
    days instead of two queries and an upsert per write. Marks of a savepoint rolled
    back inside the block stay (a day recomputed for nothing costs little, a day
    missed would be wrong)."""
    if getattr(_batch, "marks", None) is not None:
        yield  # already collecting: the outer block writes
        return
    _batch.marks = {"deals": set(), "days": set(), "since": None}
    try:
        yield
        marks = _batch.marks
    finally:
        _batch.marks = None
    days = marks["days"] | set(_days_of_deals(marks["deals"]))
    # No deal's ``before`` was kept (kpis.changes): the days are gathered again.
    mark_days(days | set(days_since(marks["since"])))


def _days_of_deals(deal_ids, chunk=2000):
    """``deal_days`` of many deals, a few queries per ``chunk`` deals, but for the days
    from their latest events to today: ``batched`` adds those from the earliest moment
    its marks saw, which is no later."""
    from funnel.models import Activity, Deal, Offer

    yield today()
    ids = sorted(i for i in deal_ids if i is not None)
    fields = [*STAMP_FIELDS, "won_at", "lost_at", "expected_close_date"]
    for i in range(0, len(ids), chunk):
        part = ids[i : i + chunk]
        moments = set()
        for row in Deal.objects.filter(pk__in=part).values_list(*fields):
            moments.update(row)
        for row in Offer.objects.filter(deal_id__in=part).values_list("sent_at", "responded_at"):
            moments.update(row)
        moments.update(Activity.objects.filter(deal_id__in=part).values_list("held_at", flat=True))
        yield from {_day(m) for m in moments if m is not None}


def _enqueue_on_commit():
    # One task per transaction, however many changes it marks (an import marks
    # thousands). A savepoint rolled back drops its callback; the sweep covers that.
    connection = transaction.get_connection()
    if any(callback is _enqueue for _, callback, _ in connection.run_on_commit):
        return
    # robust=True: a broker outage must never turn a saved change into an error; the
    # sweep picks the marks up later (pitfalls.md).
    transaction.on_commit(_enqueue, robust=True)


def _enqueue():
    if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
        from kpis.tasks import recompute_dirty

        recompute_dirty.apply_async()  # eager: runs here and now, as asked
        return
    _sender.wake()


class _Sender:
    """Sends "recompute what is dirty" from a background thread, so a commit never
    waits on the broker: with the broker down, saving a deal costs no connection
    timeout and raises nothing (the marks are in the database; the periodic sweep
    recomputes them once the broker is back). Wake-ups that arrive while a message is
    being sent fold into one more message."""

    def __init__(self):
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread = None
        self._pid = None
        self._busy = False

    def wake(self):
        self._wanted.set()
        with self._lock:
            # A forked process (gunicorn, Celery prefork) starts its own thread.
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="kpis-dirty-sender", daemon=True
                )
                self._thread.start()

    def _run(self):
        from kpis.tasks import recompute_dirty

        while True:
            if not self._wanted.wait(timeout=60):
                return  # idle: the next wake starts a new thread
            self._busy = True
            self._wanted.clear()
            try:
                recompute_dirty.apply_async(retry=False)
            except Exception as exc:  # the broker is down: the sweep covers it
                log.warning("could not enqueue the dirty recompute: %s", exc)
            finally:
                self._busy = False

    def flush(self, timeout=5):
        """Wait until nothing is waiting to be sent or being sent (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while (self._wanted.is_set() or self._busy) and time.monotonic() < deadline:
            time.sleep(0.01)


_sender = _Sender()


class Claimed(list):
    """Claimed marks, [(key, generation)]. ``whole``: one of them asks for every slice;
    ``retried``: one was claimed before by a worker that did not finish (its lease
    expired), which may have stored part of its work (the ledger's days), so what
    that work changed can no longer be told; ``scope``: the slices applied changes
    moved on each day (``DirtyDay.scope``)."""

    whole = False
    retried = False

    def __init__(self, *args):
        super().__init__(*args)
        #: {day: {family: slices}}: what applied changes moved there (``DirtyDay.scope``).
        self.scope = {}


def _claim(model, key, limit, order):
    now = timezone.now()
    fields = ["pk", *key, "generation", "claimed_until"]
    if model is DirtyDay:
        fields += ["whole", "scope"]
    with transaction.atomic():
        rows = (
            model.objects.select_for_update(skip_locked=True)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .order_by(*order)
            .values_list(*fields)
        )
        rows = list(rows if limit is None else rows[:limit])
        model.objects.filter(pk__in=[r[0] for r in rows]).update(claimed_until=now + CLAIM_LEASE)
    n = len(key)
    claimed = Claimed((row[1] if n == 1 else tuple(row[1 : 1 + n]), row[1 + n]) for row in rows)
    claimed.retried = any(row[2 + n] is not None for row in rows)
    claimed.whole = claimed.retried or any(row[3 + n] for row in rows if len(row) > 3 + n)
    if model is DirtyDay:
        claimed.scope = merged_scopes({row[1]: row[4 + n] for row in rows})
    return claimed


def claim(limit):
    """Take up to ``limit`` (None: all) marks not leased by another worker:
    [(day, generation)], a ``Claimed``."""
    return _claim(DirtyDay, ["day"], limit, ["day"])


def is_marked(day):
    """Whether ``day`` is marked dirty (claimed or not)."""
    return DirtyDay.objects.filter(day=day).exists()


def pending():
    """Whether anything waits for the sweep: a dirty day or a stale larger-period median
    (the step right after the days). One query."""
    return DirtyDay.objects.values("pk").union(StaleMedian.objects.values("pk")).exists()


def held_elsewhere(before, mine):
    """Whether another worker holds (under an unexpired lease) a mark of a day before
    ``before`` other than the days ``mine``: its rows in the ledger may not be
    recomputed yet."""
    return (
        DirtyDay.objects.filter(day__lt=before, claimed_until__gt=timezone.now())
        .exclude(day__in=sorted(set(mine)))
        .exists()
    )


def _release(model, key, claimed):
    """Delete the claimed marks still at their claimed generation; hand the others
    (marked again meanwhile) back. Three queries for a batch, the rows locked in key
    order (as the markers' upserts take them) so a mark cannot move in between."""
    wanted = dict(claimed)
    if not wanted:
        return
    values = [v if len(key) > 1 else (v,) for v in wanted]
    # A superset of the claimed rows (each key field among its claimed values),
    # narrowed to them here.
    candidates = model.objects.filter(
        **{f"{name}__in": sorted({v[i] for v in values}) for i, name in enumerate(key)}
    )
    done, back = [], []
    with transaction.atomic():
        rows = candidates.select_for_update().order_by(*key).values_list("pk", *key, "generation")
        for pk, *value, generation in rows:
            value = tuple(value) if len(key) > 1 else value[0]
            if value in wanted:
                (done if generation == wanted[value] else back).append(pk)
        model.objects.filter(pk__in=done).delete()
        model.objects.filter(pk__in=back).update(claimed_until=None)


def release(claimed):
    """Clear the marks that were not marked again while they were recomputed; give the
    others back to the next sweep."""
    _release(DirtyDay, ["day"], claimed)


MEDIAN_KEY = ["grain", "period_start", "family", "slice"]


def mark_medians(keys):
    """Mark larger periods' medians stale: ``keys`` (grain, period start, family,
    slice; slice "" for every slice)."""
    keys = sorted(set(keys))
    if not keys:
        return
    generation = time.time_ns()
    StaleMedian.objects.bulk_create(
        [StaleMedian(**dict(zip(MEDIAN_KEY, k, strict=True)), generation=generation) for k in keys],
        update_conflicts=True,
        unique_fields=MEDIAN_KEY,
        update_fields=["generation"],
    )


def claim_medians(limit=None):
    """Take the stale medians not leased by another worker: [((grain, period start,
    family, slice), generation)]."""
    return _claim(StaleMedian, MEDIAN_KEY, limit, MEDIAN_KEY)


def release_medians(claimed):
    _release(StaleMedian, MEDIAN_KEY, claimed)
