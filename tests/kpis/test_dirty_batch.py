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
    with transaction.atomic():
        _script(rep)
        one_by_one = _marked()
        transaction.set_rollback(True)

    with transaction.atomic(), dirty.batched():
        _script(rep)
        assert _marked() == set()  # nothing written until the block ends
    batched = _marked()

    assert batched == one_by_one
    # Every day from the first write's latest event (the creation, 40 days ago, back-
    # dated as an import's is) to today: the deal was open, its owner active, all along.
    assert batched == {local_date(days_ago(d)) for d in range(41)}


def test_batched_writes_nothing_when_the_block_fails(rep):
    try:
        with transaction.atomic(), dirty.batched():
            _script(rep)
            raise RuntimeError("abort the import")
    except RuntimeError:
        pass
    assert _marked() == set()
