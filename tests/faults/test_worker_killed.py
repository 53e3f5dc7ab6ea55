"""Worker killed: SIGKILL a Celery worker in the middle of a full recompute; the task was
not acknowledged (acks_late), so Redis hands it to the next worker once its visibility
timeout has passed, and the store ends equal to a full recompute."""

import time

import pytest

from config.celery import app
from funnel.stages import Stage
from kpis import recompute
from kpis.models import DirtyDay, KpiSnapshot
from tests.factories import deal_in_stage, won_deal

from .conftest import snapshot_rows, store_difference, wait_until

#: The visibility timeout of the second worker: the message of the killed worker is
#: older than this when the second worker starts, so it is restored at once.
VISIBILITY_TIMEOUT = 2


def a_year_of_deals(reps):
    stages = [Stage.QUALIFICATION, Stage.NEEDS, Stage.OFFER, Stage.NEGOTIATION, Stage.CLOSING]
    for i in range(20):
        owner = reps[i % len(reps)]
        if i % 6 == 5:
            won_deal(owner, start_days_ago=30 + 11 * i)
        else:
            deal_in_stage(owner, stages[i % len(stages)], start_days_ago=20 + 11 * i)


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_recompute_killed_with_its_worker_is_redelivered_to_the_next_worker(
    broker, start_worker_process, rep, teammate, outsider
):
    a_year_of_deals([rep, teammate, outsider])
    app.control.purge()  # the creations' on-commit tasks: the reference below covers them
    started = time.monotonic()
    recompute.recompute_all()
    seconds = time.monotonic() - started
    expected = snapshot_rows()
    assert DirtyDay.objects.count() == 0
    KpiSnapshot.objects.all().delete()  # the store the killed recompute must rebuild

    first = start_worker_process("doomed", broker.url)
    app.send_task("kpis.recompute_all")
    first.wait_for_log("Task kpis.recompute_all[", timeout=20)
    time.sleep(min(seconds / 4, 1.0))
    first.kill()
    killed_at = time.monotonic()
    assert "succeeded" not in first.log, "the recompute ended before the kill: add data"
    assert snapshot_rows() != expected  # the kill interrupted the work

    # The message is still unacknowledged in Redis; a worker restores it once it is
    # older than the visibility timeout (production: an hour, here two seconds).
    time.sleep(max(0.0, VISIBILITY_TIMEOUT + 0.5 - (time.monotonic() - killed_at)))
    second = start_worker_process(
        "successor", broker.url, FAULTS_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT)
    )
    second.wait_for_log("Task kpis.recompute_all[", timeout=20)
    wait_until(
        lambda: "succeeded" in second.log,
        timeout=max(30, 4 * seconds),
        message="the redelivered recompute finishing",
    )
    stored = snapshot_rows()
    assert stored == expected, store_difference(stored, expected)
    assert DirtyDay.objects.count() == 0
