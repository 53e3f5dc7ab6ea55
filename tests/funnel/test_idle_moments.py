"""The deal row keeps its latest stage-history moment and its latest activity
(``Deal.stage_changed_at``, ``Deal.last_activity_at``): the stalled deals now are
counted from them (kpis.company.open_now, the board). Every writer keeps them: the
domain functions here; the bulk import and the demo loader write what the domain
functions write (tests/funnel/test_import_bulk.py, test_seed_demo.py compare every deal
column); the migration fills them for existing deals."""

import datetime

import pytest
from django.db.models import Max

from funnel import domain
from funnel.models import Activity, ActivityKind, Deal, StageHistory
from funnel.stages import Stage
from tests.factories import days_ago, lost_reason, make_deal, won_deal
from tests.migrating import migrating

pytestmark = pytest.mark.django_db


def kept(deal):
    return tuple(
        Deal.objects.filter(pk=deal.pk).values_list("stage_changed_at", "last_activity_at")[0]
    )


def from_rows(deal):
    """The same two moments read from the deal's history and activity rows."""
    return (
        StageHistory.objects.filter(deal=deal).aggregate(m=Max("at"))["m"],
        Activity.objects.filter(deal=deal).aggregate(m=Max("held_at"))["m"],
    )


def test_every_transition_and_activity_keeps_the_latest_moments(rep, manager):
    deal = make_deal(rep, at=days_ago(30))
    assert kept(deal) == from_rows(deal) == (days_ago(30), None)

    domain.log_activity(deal, kind=ActivityKind.CALL, held_at=days_ago(28), by=rep)
    assert kept(deal) == from_rows(deal) == (days_ago(30), days_ago(28))

    # A skip writes two history rows at one moment.
    domain.move_forward(deal, Stage.NEEDS, by=rep, at=days_ago(25))
    assert kept(deal) == from_rows(deal) == (days_ago(25), days_ago(28))

    # A back-dated activity does not move the latest one back.
    domain.log_activity(deal, kind=ActivityKind.EMAIL, held_at=days_ago(29), by=rep)
    assert kept(deal) == from_rows(deal) == (days_ago(25), days_ago(28))
    domain.log_activity(deal, kind=ActivityKind.MEETING, held_at=days_ago(20), by=rep)
    assert kept(deal) == from_rows(deal) == (days_ago(25), days_ago(20))

    domain.mark_lost(deal, lost_reason(), by=rep, at=days_ago(15))
    assert kept(deal) == from_rows(deal) == (days_ago(15), days_ago(20))

    domain.reopen(deal, by=manager, at=days_ago(10))
    assert kept(deal) == from_rows(deal) == (days_ago(10), days_ago(20))

    # A change of terms is no stage change.
    domain.update_deal(deal, by=rep, title="Renamed")
    assert kept(deal) == (days_ago(10), days_ago(20))


def test_a_disqualified_lead_and_a_won_deal_keep_their_latest_moments(rep):
    lead = make_deal(rep, at=days_ago(12))
    domain.disqualify(lead, by=rep, at=days_ago(11))
    assert kept(lead) == from_rows(lead) == (days_ago(11), None)

    deal = won_deal(rep)
    stage_changed_at, _ = from_rows(deal)
    assert stage_changed_at == deal.won_at
    assert kept(deal) == from_rows(deal) == (deal.won_at, None)


@pytest.mark.django_db(transaction=True)
def test_the_migration_fills_both_moments_from_the_rows(seeded_rows):
    before = ("funnel", "0004_entered_at")
    after = ("funnel", "0005_deal_stage_changed_last_activity")
    with migrating(before, after) as step:
        old = step.old
        user = old.get_model("accounts", "User").objects.create(username="old.rep")
        company = old.get_model("funnel", "Company").objects.create(name="Old Co")
        moment = datetime.datetime(2025, 3, 3, 9, 30, tzinfo=datetime.UTC)
        day = datetime.timedelta(days=1)
        Deal_ = old.get_model("funnel", "Deal")
        deals = [
            Deal_.objects.create(
                title=title,
                company=company,
                owner=user,
                entered_lead_at=moment,
                last_event_at=moment + 2 * day,
            )
            for title in ("with rows", "with history only")
        ]
        History = old.get_model("funnel", "StageHistory")
        for deal in deals:
            History.objects.create(deal=deal, event="created", to_stage="lead", at=moment, by=user)
        History.objects.create(
            deal=deals[0],
            event="moved",
            from_stage="lead",
            to_stage="qualification",
            at=moment + 2 * day,
            by=user,
        )
        Act = old.get_model("funnel", "Activity")
        for held in (3, 1):
            Act.objects.create(deal=deals[0], kind="call", held_at=moment + held * day, by=user)

        new = step.forward()
        assert list(
            new.get_model("funnel", "Deal")
            .objects.order_by("title")
            .values_list("title", "stage_changed_at", "last_activity_at")
        ) == [
            ("with history only", moment, None),
            ("with rows", moment + 2 * day, moment + 3 * day),
        ]
