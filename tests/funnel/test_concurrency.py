"""Optimistic concurrency: a change based on a stale copy of a deal is refused with
StaleDealError and writes nothing (README, "Domain rules in code")."""

import datetime
import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from funnel import domain
from funnel.domain import StaleDealError
from funnel.models import Deal, Offer, StageHistory
from funnel.stages import Stage, Status
from tests.factories import days_ago, deal_in_stage, lost_reason
from tests.funnel.test_transitions import events, snapshot

pytestmark = pytest.mark.django_db


def _document(deal, by, version=None):
    return domain.save_closing_document(
        deal,
        document_type="contract",
        issue_date=timezone.localdate() - datetime.timedelta(days=5),
        final_value=Decimal("9000"),
        by=by,
        expected_version=version,
    )


def _lost(owner):
    deal = deal_in_stage(owner, Stage.NEEDS)
    domain.mark_lost(deal, lost_reason("price"), by=owner, at=days_ago(10))
    return deal


def _with_document(owner):
    deal = deal_in_stage(owner, Stage.CLOSING)
    _document(deal, owner)
    return deal


def _draft_offer(owner):
    deal = deal_in_stage(owner, Stage.OFFER)
    domain.start_offer(deal, value=Decimal("9000"), by=owner)
    return deal


def _sent_offer(owner):
    deal = _draft_offer(owner)
    domain.send_offer(Offer.objects.get(deal=deal), by=owner, at=days_ago(1))
    return deal


#: (name, how to make the deal, the change: deal, rep, manager, expected version)
DEAL_CHANGES = [
    (
        "move_forward",
        lambda u: deal_in_stage(u, Stage.LEAD),
        lambda d, u, m, v: domain.move_forward(
            d, Stage.QUALIFICATION, by=u, at=days_ago(1), expected_version=v
        ),
    ),
    (
        "skip",
        lambda u: deal_in_stage(u, Stage.LEAD),
        lambda d, u, m, v: domain.move_forward(
            d, Stage.OFFER, by=u, at=days_ago(1), expected_version=v
        ),
    ),
    (
        "mark_lost",
        lambda u: deal_in_stage(u, Stage.NEEDS),
        lambda d, u, m, v: domain.mark_lost(
            d, lost_reason("price"), by=u, at=days_ago(1), expected_version=v
        ),
    ),
    (
        "disqualify_lead",
        lambda u: deal_in_stage(u, Stage.LEAD),
        lambda d, u, m, v: domain.disqualify(d, by=u, at=days_ago(1), expected_version=v),
    ),
    (
        "disqualify_qualifying",
        lambda u: deal_in_stage(u, Stage.QUALIFICATION),
        lambda d, u, m, v: domain.disqualify(d, by=u, at=days_ago(1), expected_version=v),
    ),
    (
        "reopen",
        _lost,
        lambda d, u, m, v: domain.reopen(d, by=m, at=days_ago(1), expected_version=v),
    ),
    (
        "agree_terms",
        lambda u: deal_in_stage(u, Stage.NEGOTIATION),
        lambda d, u, m, v: domain.agree_terms(
            d,
            agreed_value=Decimal("8000"),
            discount_pct=20,
            by=u,
            at=days_ago(1),
            expected_version=v,
        ),
    ),
    (
        "save_closing_document",
        lambda u: deal_in_stage(u, Stage.CLOSING),
        lambda d, u, m, v: _document(d, u, v),
    ),
    (
        "win",
        _with_document,
        lambda d, u, m, v: domain.win(d, by=u, at=days_ago(1), expected_version=v),
    ),
    (
        "update_tracked_fields",
        lambda u: deal_in_stage(u, Stage.NEEDS),
        lambda d, u, m, v: domain.update_deal(
            d, by=u, estimated_value=Decimal("1"), discount_pct=3, owner=m, expected_version=v
        ),
    ),
    (
        "update_untracked_field",
        lambda u: deal_in_stage(u, Stage.NEEDS),
        lambda d, u, m, v: domain.update_deal(d, by=u, title="Renamed by B", expected_version=v),
    ),
]

#: Offer changes check the version the caller expects against the deal's.
OFFER_CHANGES = [
    (
        "send_offer",
        _draft_offer,
        lambda d, u, m, v: domain.send_offer(
            Offer.objects.get(deal=d), by=u, at=days_ago(0, hour=0), expected_version=v
        ),
    ),
    (
        "accept_offer",
        _sent_offer,
        lambda d, u, m, v: domain.accept_offer(Offer.objects.get(deal=d), by=u, expected_version=v),
    ),
    (
        "reject_offer",
        _sent_offer,
        lambda d, u, m, v: domain.reject_offer(Offer.objects.get(deal=d), by=u, expected_version=v),
    ),
]


def cases(changes):
    return pytest.mark.parametrize(
        ("make", "change"), [c[1:] for c in changes], ids=[c[0] for c in changes]
    )


@cases(DEAL_CHANGES)
def test_a_change_from_a_stale_copy_is_refused_and_writes_nothing(rep, manager, make, change):
    deal = make(rep)
    first = Deal.objects.get(pk=deal.pk)
    second = Deal.objects.get(pk=deal.pk)
    domain.update_deal(first, by=manager, title="Renamed by A")
    after_first = snapshot(deal)

    with pytest.raises(StaleDealError):
        change(second, rep, manager, None)

    assert snapshot(deal) == after_first
    # The refused copy is reloaded, so the caller sees what the database holds.
    assert (second.version, second.title) == (first.version, "Renamed by A")


def test_a_transition_from_a_stale_copy_after_another_transition_is_refused(rep, manager):
    deal = deal_in_stage(rep, Stage.LEAD)
    first = Deal.objects.get(pk=deal.pk)
    second = Deal.objects.get(pk=deal.pk)

    domain.move_forward(first, Stage.QUALIFICATION, by=rep, at=days_ago(2))
    after_first = snapshot(deal)
    with pytest.raises(StaleDealError):
        domain.mark_lost(second, lost_reason("price"), by=manager, at=days_ago(1))

    assert snapshot(deal) == after_first
    assert events(deal) == [("created", None, "lead"), ("moved", "lead", "qualification")]
    assert (second.stage, second.status) == (Stage.QUALIFICATION, Status.OPEN)


def test_the_refused_copy_can_be_retried_once_reloaded(rep):
    deal = deal_in_stage(rep, Stage.LEAD)
    first = Deal.objects.get(pk=deal.pk)
    second = Deal.objects.get(pk=deal.pk)
    domain.update_deal(first, by=rep, title="Renamed by A")
    with pytest.raises(StaleDealError):
        domain.update_deal(second, by=rep, title="Renamed by B")

    domain.update_deal(second, by=rep, title="Renamed by B")

    deal.refresh_from_db()
    assert (deal.title, deal.version) == ("Renamed by B", 3)


def test_the_stale_error_says_what_happened(rep):
    deal = deal_in_stage(rep, Stage.LEAD)
    with pytest.raises(StaleDealError, match="Someone else changed this deal"):
        domain.update_deal(deal, by=rep, title="x", expected_version=deal.version + 1)


@pytest.mark.parametrize("offset", [-1, 1])
@cases(DEAL_CHANGES + OFFER_CHANGES)
def test_a_change_expecting_another_version_is_refused(rep, manager, make, change, offset):
    deal = make(rep)
    deal.refresh_from_db()
    before = snapshot(deal)

    with pytest.raises(StaleDealError):
        change(deal, rep, manager, deal.version + offset)

    assert snapshot(deal) == before


@cases(DEAL_CHANGES + OFFER_CHANGES)
def test_a_change_expecting_the_current_version_goes_through(rep, manager, make, change):
    deal = make(rep)
    deal.refresh_from_db()
    before = snapshot(deal)

    change(deal, rep, manager, deal.version)

    assert snapshot(deal) != before


# PostgreSQL: two connections at once -------------------------------------------------


def _hold_until_another_connection_waits(others_done, timeout=5.0):
    """Keep this transaction open until another connection waits for one of its locks,
    all other threads are done, or ``timeout`` passes. Returns whether one waited: proof
    that the changes really overlapped instead of running one after the other."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline and not others_done():
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.01)
    return False


def _race(work, copies):
    """Run ``work(copy)`` for each copy in its own thread, on its own database
    connection, released together by a barrier. A thread that gets through commits only
    once another is blocked behind its locks (or has finished). Returns each thread's
    outcome ("ok", "stale" or the unexpected error) and, per thread that got through,
    whether it saw another one waiting."""
    barrier = threading.Barrier(len(copies))
    outcomes = [None] * len(copies)
    overlapped = []

    def others_done(i):
        return all(outcome is not None for j, outcome in enumerate(outcomes) if j != i)

    def run(i):
        outcome = None
        try:
            connection.ensure_connection()
            barrier.wait(timeout=10)
            with transaction.atomic():
                work(copies[i])
                overlapped.append(_hold_until_another_connection_waits(lambda: others_done(i)))
            outcome = "ok"
        except StaleDealError:
            outcome = "stale"
        except Exception as exc:  # reported by the callers' assertions
            outcome = repr(exc)
        finally:
            connection.close()
            outcomes[i] = outcome

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(copies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes, overlapped


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_connections_saving_one_version_at_once_let_exactly_one_win(on_postgres, rep):
    deal = deal_in_stage(rep, Stage.NEEDS)
    copies = [Deal.objects.get(pk=deal.pk) for _ in range(2)]
    version = copies[0].version

    outcomes, overlapped = _race(
        lambda copy: domain.update_deal(
            copy, by=rep, title=f"Renamed by {id(copy)}", estimated_value=Decimal("1")
        ),
        copies,
    )

    assert sorted(outcomes) == ["ok", "stale"]
    assert overlapped == [True]
    deal.refresh_from_db()
    winner = copies[outcomes.index("ok")]
    assert deal.version == version + 1
    assert deal.title == f"Renamed by {id(winner)}"
    assert list(deal.changes.values_list("field", "old_value", "new_value")) == [
        ("estimated_value", "10000.00", "1.00")
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_moves_of_one_deal_write_one_moved_row(on_postgres, rep):
    deal = deal_in_stage(rep, Stage.LEAD)
    copies = [Deal.objects.get(pk=deal.pk) for _ in range(2)]
    at = days_ago(1)

    outcomes, overlapped = _race(
        lambda copy: domain.move_forward(copy, Stage.QUALIFICATION, by=rep, at=at), copies
    )

    assert sorted(outcomes) == ["ok", "stale"]
    assert overlapped == [True]
    deal.refresh_from_db()
    assert (deal.stage, deal.entered_qualification_at, deal.version) == (
        Stage.QUALIFICATION,
        at,
        2,
    )
    assert StageHistory.objects.filter(deal=deal, event="moved").count() == 1
    assert events(deal) == [("created", None, "lead"), ("moved", "lead", "qualification")]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_new_offer_versions_get_consecutive_numbers(on_postgres, rep):
    deal = deal_in_stage(rep, Stage.OFFER)
    copies = [Deal.objects.get(pk=deal.pk) for _ in range(2)]

    outcomes, overlapped = _race(
        lambda copy: domain.start_offer(copy, value=Decimal("9000"), by=rep), copies
    )

    assert outcomes == ["ok", "ok"]
    assert sorted(overlapped) == [False, True]  # the second waited for the first's lock
    assert sorted(Offer.objects.filter(deal=deal).values_list("version", flat=True)) == [1, 2]
