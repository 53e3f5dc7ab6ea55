"""Celery tasks: thin wrappers that call kpis/recompute.py. Each has a stable name,
is safe to run twice (recomputing replaces the same snapshot rows), retries with
backoff a bounded number of times, and is acknowledged only after it ran."""

from celery import shared_task

from kpis import recompute

RETRY = {
    "autoretry_for": (Exception,),
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 5,
}


@shared_task(name="kpis.recompute_period", acks_late=True, **RETRY)
def recompute_period(grain, period_start):
    import datetime

    return recompute.recompute_period(grain, datetime.date.fromisoformat(period_start))


@shared_task(name="kpis.recompute_all", acks_late=True, **RETRY)
def recompute_all():
    """Fan a full recompute out: one task per part (a grain and a run of its periods),
    shared by every worker; the day parts first, the larger ones when the days are
    done. Returns the job id."""
    job, parts = recompute.start_full_recompute()
    _send(job.pk, parts)
    return job.pk


def _send(job_id, parts):
    for index, (grain, first, last) in parts:
        recompute_part.delay(job_id, index, grain, first.isoformat(), last.isoformat())


@shared_task(name="kpis.recompute_part", acks_late=True, **RETRY)
def recompute_part(job_id, index, grain, first, last):
    import datetime

    parts = recompute.recompute_part(
        job_id,
        index,
        grain,
        datetime.date.fromisoformat(first),
        datetime.date.fromisoformat(last),
    )
    _send(job_id, parts)
    return len(parts)


@shared_task(name="kpis.recompute_dirty", acks_late=True, **RETRY)
def recompute_dirty():
    """Recompute what is dirty, batch after batch, until nothing is left."""
    return recompute.recompute_all_dirty()


@shared_task(name="kpis.mark_today", acks_late=True, **RETRY)
def mark_today():
    recompute.mark_today()


@shared_task(name="kpis.freeze_forecasts", acks_late=True, **RETRY)
def freeze_forecasts():
    from kpis.forecasts import freeze_forecasts as freeze

    return freeze()
