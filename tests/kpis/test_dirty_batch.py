"""``dirty.batched``: an import's marks written once, the same days as one by one."""

from django.db import transaction

from funnel import domain
from funnel.stages import Stage
from kpis import dirty
from kpis.models import DirtyDay
from kpis.periods import local_date
from tests.factories import days_ago, make_deal


def _marked():
    return set(DirtyDay.objects.values_list("day", flat=True))


def _script(rep):
    deal = make_deal(rep, at=days_ago(40))
    domain.move_forward(deal, Stage.QUALIFICATION, by=rep, at=days_ago(35))
    domain.move_forward(deal, Stage.NEEDS, by=rep, at=days_ago(30))
    domain.log_activity(deal, kind="meeting", by=rep, held_at=days_ago(28))
    domain.move_forward(deal, Stage.OFFER, by=rep, at=days_ago(20))
    return deal


def test_batched_marks_every_day_the_writes_mark_one_by_one(rep):
    with transaction.atomic(), dirty.batched():
        deal = _script(rep)
        assert _marked() == set()  # nothing written until the block ends
    batched = _marked()

    DirtyDay.objects.all().delete()
    dirty.mark_deal(deal)
    assert batched == _marked()
    # The stamps and the meeting, and every day from the latest event (the move to
    # offer, 20 days ago) to today.
    stamps = {local_date(days_ago(d)) for d in (40, 35, 30, 28)}
    since_offer = {local_date(days_ago(d)) for d in range(21)}
    assert batched == stamps | since_offer


def test_batched_writes_nothing_when_the_block_fails(rep):
    try:
        with transaction.atomic(), dirty.batched():
            _script(rep)
            raise RuntimeError("abort the import")
    except RuntimeError:
        pass
    assert _marked() == set()
