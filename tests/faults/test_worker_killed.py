"""Worker killed: SIGKILL a Celery worker in the middle of a full recompute (while it runs
one of the parts the recompute fans out into); the task was not acknowledged
(acks_late), so Redis hands it to the next worker once its visibility timeout has
passed, and the store ends equal to a full recompute."""

import re
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
    recompute.recompute_all()
    expected = snapshot_rows()
    assert DirtyDay.objects.count() == 0
    KpiSnapshot.objects.all().delete()  # the store the killed recompute must rebuild

    first = start_worker_process("doomed", broker.url)
    app.send_task("kpis.recompute_all")
    # The full recompute fans out into parts (one task per grain and run of periods);
    # kill the worker while it runs one.
    first.wait_for_log("Task kpis.recompute_part[", timeout=30)
    first.kill()
    killed_at = time.monotonic()
    interrupted = unfinished(first.log)
    assert interrupted, "every task had ended before the kill:\n" + first.log
    assert snapshot_rows() != expected  # the kill interrupted the work

    # The message is still unacknowledged in Redis; a worker restores it once it is
    # older than the visibility timeout (production: an hour, here two seconds).
    time.sleep(max(0.0, VISIBILITY_TIMEOUT + 0.5 - (time.monotonic() - killed_at)))
    second = start_worker_process(
        "successor", broker.url, FAULTS_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT)
    )
    wait_until(
        lambda: all(f"[{task_id}] succeeded" in second.log for task_id in interrupted),
        timeout=45,
        message="the interrupted task redelivered to the second worker and finished",
    )
    wait_until(
        lambda: KpiSnapshot.objects.count() == len(expected) and not unfinished(second.log),
        timeout=45,
        message="the second worker finishing the recompute",
    )
    stored = snapshot_rows()
    assert stored == expected, store_difference(stored, expected)
    assert DirtyDay.objects.count() == 0


def unfinished(log):
    """Ids of the tasks a worker received and did not finish."""
    received = set(re.findall(r"Task [\w.]+\[([\w-]+)\] received", log))
    return received - set(re.findall(r"Task [\w.]+\[([\w-]+)\] succeeded", log))
