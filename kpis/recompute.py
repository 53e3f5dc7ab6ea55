"""Recomputing stored KPIs: one period, everything, or what is dirty.

The Celery tasks (kpis/tasks.py) and the ``recompute_kpis`` command call these.
"""

import datetime
import functools
import logging
import threading
from collections import defaultdict

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from funnel.models import Activity, Deal, MarketingSpend, Offer, SalesCost
from kpis import changes, company, dirty, ledger, reading
from kpis.compute import (
    MEDIAN_FAMILIES,
    changed_breakdowns,
    changed_families,
    changed_slices,
    refresh_larger_medians,
    refresh_ledger,
    refresh_ledger_for,
    refresh_pipeline,
    store,
    store_days,
    store_days_from_ledger,
)
from kpis.models import RecomputeJob, Target
from kpis.periods import GRAINS, Grain, Period, hour_of, local_date, periods_between, today
from kpis.timeline import LedgerOwners, customer_timeline, job_tag

log = logging.getLogger(__name__)

_sorting = threading.local()


def sort_memory(function):
    """Run ``function`` with PostgreSQL's ``work_mem`` raised to ``LEJEK_KPI_WORK_MEM``
    on its connection, and reset afterwards: the roll-ups' grouping sets and the
    medians sort in memory instead of on disk. Reentrant (a sweep calls the batch
    recompute); the web requests' connections keep the server's setting."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        size = settings.LEJEK_KPI_WORK_MEM
        if connection.vendor != "postgresql" or not size or getattr(_sorting, "on", False):
            return function(*args, **kwargs)
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('work_mem', %s, false)", [size])
        _sorting.on = True
        try:
            return function(*args, **kwargs)
        finally:
            _sorting.on = False
            # A setting made inside a transaction that is rolled back goes with it (as
            # ``SET`` does): only a connection that keeps its transaction is reset.
            if not connection.needs_rollback:
                try:
                    with connection.cursor() as cursor:
                        cursor.execute("RESET work_mem")
                except DatabaseError:  # the connection is gone: so is its setting
                    log.warning("could not reset work_mem", exc_info=True)

    return wrapper


#: Dirty days one task takes at a time. Each batch recomputes, per grain, every period
#: containing one of its days: a batch of days inside one month costs about as much as
#: a single day (the month, quarter and year are recomputed once for all of them).
DIRTY_BATCH = 400


@sort_memory
def recompute_period(grain, period_start):
    """Recompute one period from the deals: its days first (the ledger), then the
    period. Days whose measures changed are marked, so every other period containing
    them follows."""
    reading.ensure_maturity()
    period = Period.containing(grain, period_start)
    if Grain(grain) == Grain.DAY:
        total, changed = store_days([period])
    else:
        changed = refresh_ledger_for([period])
        total = store(grain, [period], days_fresh=True)
    _follow(changed)
    return total


def _follow(changed):
    """Mark the days whose ledger rows changed outside an incremental recompute: the
    larger periods containing them were not recomputed with them."""
    if changed:
        dirty.mark_days(changed)


def build_ledger():
    """Fill the ledger for the whole data span: day rows from the deals (each larger
    period's sums follow) and every larger period's medians. Done by a full recompute;
    an incremental one does it first when no full recompute has (after an upgrade)."""
    span = data_span()
    refresh_ledger(*span)
    refresh_larger_medians({grain: periods_of_span(grain, span) for grain in ledger.LARGER})
    ledger.set_built()


def data_span():
    """The first and last day that any KPI can fall on."""
    firsts, lasts = [], []
    for model, first_field, last_field in (
        (Deal, "entered_lead_at", "last_event_at"),
        (Offer, "prep_started_at", "sent_at"),
        (Activity, "held_at", "held_at"),
    ):
        span = model.objects.aggregate(first=Min(first_field), last=Max(last_field))
        if span["first"]:
            firsts.append(local_date(span["first"]))
            lasts.append(local_date(span["last"] or span["first"]))
    for model in (MarketingSpend, SalesCost, Target):
        field = "period_start" if model is Target else "month"
        span = model.objects.aggregate(first=Min(field), last=Max(field))
        if span["first"]:
            firsts.append(span["first"])
            lasts.append(span["last"])
    # The open pipeline is kept by expected close date (the ``pipeline`` family).
    expected = Deal.objects.aggregate(
        first=Min("expected_close_date"), last=Max("expected_close_date")
    )
    if expected["first"]:
        firsts.append(expected["first"])
        lasts.append(expected["last"])
    lasts.append(today())
    return (min(firsts) if firsts else today()), max(lasts)


def periods_of_span(grain, span=None):
    """Every ``grain`` period of the data span (``span``: one already read)."""
    return periods_between(grain, *(span or data_span()))


@sort_memory
def recompute_all(grains=GRAINS):
    """Recompute every period of every grain from the first data to the last. The
    marks present when it starts are covered by it and cleared (unless marked again
    meanwhile). It takes this hour's inputs and maturity horizon afresh from the deals
    (``reading.ensure_maturity``), for the reports that follow."""
    claimed = dirty.claim(limit=None)
    reading.ensure_maturity(fresh=True)
    total = 0
    span = data_span()
    now = timezone.now()
    with company.sharing():
        company.use_hour_inputs(now, fresh=True)
        company.preset("customer_timeline", customer_timeline(fresh=True))
        if Grain.DAY in grains:
            total += store_days(periods_of_span(Grain.DAY, span))[0]
        else:
            refresh_ledger(*span)
        larger = {g: periods_of_span(g, span) for g in grains if Grain(g) != Grain.DAY}
        refresh_larger_medians(larger)
        for grain, periods in larger.items():
            total += store(grain, periods, medians_of=(), days_fresh=True)
    ledger.set_built()
    company.pipeline_refreshed(now)
    dirty.release(claimed)
    return total


#: Periods of each grain one part of a fanned-out full recompute takes: parts of
#: comparable cost (a part's queries scan only its range).
PART_PERIODS = {Grain.DAY: 183, Grain.WEEK: 53, Grain.MONTH: 24, Grain.QUARTER: 8, Grain.YEAR: 3}


def plan_parts(grains=GRAINS):
    """A full recompute cut into parts: [(grain, first period start, last period start)]."""
    parts = []
    for grain in grains:
        periods = periods_of_span(grain)
        size = PART_PERIODS[Grain(grain)]
        for i in range(0, len(periods), size):
            chunk = periods[i : i + size]
            parts.append((Grain(grain).value, chunk[0].start, chunk[-1].start))
    return parts


def start_full_recompute(grains=GRAINS):
    """Claim every dirty mark and plan the parts. Returns (job, [(index, part)]): the
    parts to run or enqueue now (the day parts); ``recompute_part`` hands out the
    others once the days are done."""
    claimed = dirty.claim(limit=None)
    # Every part reads this hour's inputs, taken afresh now, and so does every report
    # its horizon of maturity.
    company.store_inputs(timezone.now())
    reading.ensure_maturity(fresh=True)
    parts = plan_parts(grains)
    days = [(i, part) for i, part in enumerate(parts) if part[0] == Grain.DAY]
    job = RecomputeJob.objects.create(
        parts=len(parts),
        claimed=[[day.isoformat(), generation] for day, generation in claimed],
        plan=[[grain, first.isoformat(), last.isoformat()] for grain, first, last in parts],
        larger_sent=not days,
    )
    return job, days or list(enumerate(parts))


@sort_memory
def recompute_part(job_id, index, grain, first, last):
    """Recompute one part of a full recompute. Returns the parts to send next: the
    larger ones, handed out once (by the part that finishes the days). The last part to
    finish clears the marks the job covered. Running a part twice is harmless."""
    reading.ensure_maturity()
    periods = periods_between(grain, first, last)
    changed = {}
    with company.sharing():
        company.use_hour_inputs(timezone.now())
        # Built afresh once per worker and job, not by each of its dozens of parts.
        company.preset("customer_timeline", customer_timeline(fresh=job_tag(job_id)))
        if Grain(grain) == Grain.DAY:
            changed = store_days(periods)[1]
        else:
            store(grain, periods, days_fresh=True)
    send = []
    with transaction.atomic():
        job = RecomputeJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.finished_at is not None or job.larger_sent:
            # A day part redelivered after the larger parts were sent: the days that
            # changed are marked, so their larger periods follow.
            _follow(changed)
        if job is None or job.finished_at is not None:
            return send
        if index not in job.done:
            job.done.append(index)
        plan = [
            (g, datetime.date.fromisoformat(a), datetime.date.fromisoformat(b))
            for g, a, b in job.plan
        ]
        days_done = all(i in job.done for i, part in enumerate(plan) if part[0] == Grain.DAY)
        if days_done and not job.larger_sent:
            job.larger_sent = True
            send = [(i, part) for i, part in enumerate(plan) if part[0] != Grain.DAY]
        finished = len(job.done) >= job.parts
        if finished:
            job.finished_at = timezone.now()
        job.save(update_fields=["done", "finished_at", "larger_sent"])
    if finished:
        ledger.set_built()
        # Every part read the inputs stored when the job started (``store_inputs``)
        # when they all ran within that hour: its pipeline KPIs are refreshed.
        if hour_of(job.created_at) == hour_of(job.finished_at):
            company.pipeline_refreshed(job.created_at)
        dirty.release(
            [(datetime.date.fromisoformat(day), generation) for day, generation in job.claimed]
        )
        log.info("full recompute %s finished (%d parts)", job_id, job.parts)
    return send


def periods_for_days(days):
    return {grain: sorted({Period.containing(grain, d) for d in days}) for grain in GRAINS}


def recompute_days(days, claimed=None):
    """Recompute the days, then every larger period containing them from the ledger
    (their sums already include the days' changes). Every pending change of a deal is
    applied first, as its difference (kpis.changes). ``claimed``: the days' marks
    (``dirty.claim``); when none of them asks for every slice (deals' changes only),
    the days' snapshots are computed from their ledger rows and only the family KPIs
    of the slices those changes moved are recomputed; otherwise the days are gathered
    again from the deals. The larger periods' medians of the families and slices that
    changed are marked stale, for ``refresh_stale_medians`` to take right after."""
    total = 0
    now = timezone.now()
    whole = claimed is None or claimed.whole
    with company.sharing():
        if not ledger.is_built():
            build_ledger()
            whole = True  # the days' rows were just built: no change is seen
        # Every pending change of a deal, applied as its difference (kpis.changes):
        # what it moved on these days is computed here, on other days it is marked.
        wanted = set(days)
        scope = dirty.merged_scopes(
            (claimed.scope if claimed is not None else {}),
            {d: f for d, f in changes.apply_pending(claimed_days=wanted).items() if d in wanted},
        )
        company.use_latest_inputs(now)
        # The owner counts at the few boundaries asked, from the ledger (read once the
        # days' rows are replaced, below), instead of every deal scanned six times;
        # from the deals while another worker holds earlier days (their ledger rows
        # may still be stale, and its recompute covers only its own days' periods).
        if not dirty.held_elsewhere(before=max(days), mine=days):
            company.preset("owner_timeline", LedgerOwners())
        by_grain = periods_for_days(days)
        day_periods = [Period(Grain.DAY, d) for d in wanted]
        if whole:
            written, changed = store_days(day_periods, before_from_ledger=True)
            changed = dirty.merged_scopes(changed, scope)
        else:
            # A deal's changes only: their days' rows are current, nothing is gathered.
            changed = scope
            written = store_days_from_ledger(day_periods, changed, now)
        total += written
        # The larger periods of the dirty days (only their days changed), with their
        # stored medians.
        slices = None if whole else changed_slices(changed)
        families = None if whole else changed_families(changed)
        breakdowns = None if whole else changed_breakdowns(changed)
        for grain, periods in by_grain.items():
            if grain != Grain.DAY:
                total += store(
                    grain,
                    periods,
                    medians_of=(),
                    days_fresh=True,
                    slices=slices,
                    families=families,
                    breakdowns=breakdowns,
                )
    # Their medians, for the families and slices whose day rows changed: those of the
    # changed deals alone. A retried batch cannot tell what its first attempt changed.
    stale = {
        (family, key)
        for families in changed.values()
        for family, keys in families.items()
        if family in MEDIAN_FAMILIES
        for key in keys
    }
    if claimed is not None and claimed.retried:
        stale = {(family, "") for family in MEDIAN_FAMILIES}
    dirty.mark_medians(
        (grain, p.start, family, key)
        for grain, periods in by_grain.items()
        if grain != Grain.DAY
        for p in periods
        for family, key in stale
    )
    return total


@sort_memory
def refresh_stale_medians():
    """Take again the larger periods' medians marked stale (``recompute_days``) from
    the deals, and recompute those periods' median KPIs of those slices (every other
    KPI was recomputed with the days: ``store(only_medians=True)``). Returns the
    snapshot rows written."""
    claimed = dirty.claim_medians()
    if not claimed:
        return 0
    wanted = defaultdict(lambda: (set(), defaultdict(set)))
    for (grain, start, family, key), _ in claimed:
        starts, families = wanted[grain]
        starts.add(start)
        families[family].add(key)
    total = 0
    # The median KPIs read neither the hour's inputs nor the owner timeline: nothing
    # shared is set up.
    for grain, (starts, families) in wanted.items():
        every = any("" in keys for keys in families.values())
        # "" (every slice) takes every slice of the families named.
        medians_of = set(families) if every else dict(families)
        slices = None if every else set().union(*families.values())
        periods = [Period.containing(grain, start) for start in sorted(starts)]
        total += store(
            grain, periods, medians_of=medians_of, days_fresh=True, slices=slices, only_medians=True
        )
    dirty.release_medians(claimed)
    return total


@sort_memory
def refresh_hour(now=None):
    """Take ``now``'s hour's inputs (stage probabilities, trailing win rates, stall
    limits) unless taken, and refresh with them what they move beyond the days marked:
    the weighted pipeline and coverage of every period, and today's stalled deals
    (today is marked). Once an hour, by the sweep, after the dirty days."""
    now = now or timezone.now()
    total = 0
    with company.sharing():
        taken = company.use_hour_inputs(now)
        span = data_span()
        for grain in GRAINS:
            total += refresh_pipeline(grain, periods_of_span(grain, span))
        company.pipeline_refreshed(now)
    if taken:
        dirty.mark_days([today()])
    return total


@sort_memory
def recompute_dirty(limit=DIRTY_BATCH):
    """Recompute one batch of dirty days; return how many days it took."""
    claimed = dirty.claim(limit)
    if not claimed and changes.apply_pending():
        # Changes whose marks another recompute took (a full one reads every deal):
        # the days they still moved are marked now.
        claimed = dirty.claim(limit)
    if not claimed:
        return 0
    recompute_days([day for day, _ in claimed], claimed)
    dirty.release(claimed)
    log.info("recomputed %d dirty days", len(claimed))
    return len(claimed)


@sort_memory
def recompute_all_dirty():
    """The sweep (every minute), also enqueued by every change: what is dirty first,
    then, once an hour, the hour's inputs (``refresh_hour``, which marks today again)
    and maturity horizon."""
    now = timezone.now()
    total = 0
    while taken := recompute_dirty():
        total += taken
    if company.hour_pending(now):
        refresh_hour(now)
        while taken := recompute_dirty():
            total += taken
    refresh_stale_medians()
    reading.ensure_maturity(now)
    return total


def mark_today():
    """The "now" KPIs (open and stalled deals) move with time alone."""
    dirty.mark_days([today()])
