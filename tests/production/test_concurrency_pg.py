"""Concurrent edits on PostgreSQL, end to end: two clients save the same deal from the
same version at the same moment, through the web form and through the API; exactly one
succeeds and the other gets the conflict answer. Concurrent transitions of one deal
never write two history rows for one move.

tests/funnel/test_concurrency.py races the domain functions themselves (same change
twice, with proof that the transactions overlapped); here: other entry points, mixed
transitions and more than two clients.
"""

import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client

from funnel import domain
from funnel.models import Deal, DealChange, StageHistory
from funnel.stages import Stage, Status
from tests.factories import days_ago, deal_in_stage, lost_reason
from tests.funnel.test_concurrency import _race
from tests.funnel.test_transitions import events

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]


def _at_once(requests):
    """Run each ``request()`` in its own thread (and database connection), released
    together by a barrier; return their results in order."""
    barrier = threading.Barrier(len(requests))
    results = [None] * len(requests)

    def run(i):
        try:
            barrier.wait(timeout=10)
            results[i] = requests[i]()
        except Exception as exc:  # reported by the callers' assertions
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def _client(user):
    client = Client()
    client.force_login(user)
    return client


def test_two_web_forms_saved_from_one_version_let_exactly_one_through(on_postgres, rep, manager):
    deal = deal_in_stage(rep, Stage.LEAD, title="Raced deal")
    url = f"/deals/{deal.pk}/move/"
    form = {"to_stage": Stage.QUALIFICATION.value, "version": deal.version}
    clients = [_client(rep), _client(manager)]

    responses = _at_once([lambda c=c: c.post(url, form) for c in clients])

    assert sorted(r.status_code for r in responses) == [302, 409]
    loser = next(r for r in responses if r.status_code == 409)
    assert "Someone else changed this deal" in loser.content.decode()
    deal.refresh_from_db()
    assert (deal.stage, deal.version) == (Stage.QUALIFICATION, 2)
    assert events(deal) == [("created", None, "lead"), ("moved", "lead", "qualification")]


@pytest.mark.django_db
def test_a_move_form_from_a_version_already_moved_on_gets_the_conflict_page(rep, manager):
    """What the slower of two racing forms meets when it arrives after the faster one
    committed: the conflict page, not a validation error about the stage."""
    deal = deal_in_stage(rep, Stage.LEAD)
    form = {"to_stage": Stage.QUALIFICATION.value, "version": deal.version}
    assert _client(rep).post(f"/deals/{deal.pk}/move/", form).status_code == 302

    late = _client(manager).post(f"/deals/{deal.pk}/move/", form)

    assert late.status_code == 409
    assert "Someone else changed this deal" in late.content.decode()
    assert StageHistory.objects.filter(deal=deal, event="moved").count() == 1


def test_two_web_edits_of_the_value_from_one_version_keep_one_and_log_one(
    on_postgres, rep, manager
):
    deal = deal_in_stage(rep, Stage.NEEDS, title="Raced deal")
    url = f"/deals/{deal.pk}/details/"

    def form(value):
        return {
            "title": "Raced deal",
            "estimated_value": value,
            "owner": rep.pk,
            "version": deal.version,
        }

    responses = _at_once(
        [
            lambda: _client(rep).post(url, form("11000")),
            lambda: _client(manager).post(url, form("12000")),
        ]
    )

    assert sorted(r.status_code for r in responses) == [302, 409]
    winner = "11000.00" if responses[0].status_code == 302 else "12000.00"
    deal.refresh_from_db()
    assert (str(deal.estimated_value), deal.version) == (winner, deal.version)
    assert list(
        DealChange.objects.filter(deal=deal).values_list("field", "old_value", "new_value")
    ) == [("estimated_value", "10000.00", winner)]


def test_two_api_clients_moving_from_one_version_let_exactly_one_through(on_postgres, rep, manager):
    deal = deal_in_stage(rep, Stage.LEAD)
    url = f"/api/v1/deals/{deal.pk}/move/"
    body = {"stage": Stage.QUALIFICATION.value, "version": deal.version}
    clients = [_client(rep), _client(manager)]

    responses = _at_once(
        [lambda c=c: c.post(url, body, content_type="application/json") for c in clients]
    )

    assert sorted(r.status_code for r in responses) == [200, 409]
    conflict = next(r for r in responses if r.status_code == 409).json()
    assert conflict["current_version"] == 2
    assert StageHistory.objects.filter(deal=deal, event="moved").count() == 1


def test_a_move_and_a_loss_at_once_apply_one_of_them(on_postgres, rep, manager):
    deal = deal_in_stage(rep, Stage.NEEDS)
    copies = [Deal.objects.get(pk=deal.pk) for _ in range(2)]
    at = days_ago(1)
    changes = {
        id(copies[0]): lambda d: domain.move_forward(d, Stage.OFFER, by=rep, at=at),
        id(copies[1]): lambda d: domain.mark_lost(d, lost_reason("price"), by=manager, at=at),
    }

    outcomes, overlapped = _race(lambda copy: changes[id(copy)](copy), copies)

    assert sorted(outcomes) == ["ok", "stale"]
    assert overlapped == [True]
    deal.refresh_from_db()
    history = events(deal)[-1:]
    if outcomes[0] == "ok":
        assert (deal.stage, deal.status) == (Stage.OFFER, Status.OPEN)
        assert history == [("moved", "needs", "offer")]
    else:
        assert (deal.stage, deal.status) == (Stage.NEEDS, Status.LOST)
        assert history == [("lost", "needs", "needs")]
    assert len(events(deal)) == 4  # created, qualification, needs, and the one change


def test_four_concurrent_moves_write_one_move(on_postgres, rep):
    deal = deal_in_stage(rep, Stage.LEAD)
    copies = [Deal.objects.get(pk=deal.pk) for _ in range(4)]
    targets = [Stage.QUALIFICATION, Stage.NEEDS, Stage.OFFER, Stage.QUALIFICATION]
    at = days_ago(1)
    work = {id(c): t for c, t in zip(copies, targets, strict=True)}

    outcomes, _ = _race(
        lambda copy: domain.move_forward(copy, work[id(copy)], by=rep, at=at), copies
    )

    assert sorted(outcomes) == ["ok", "stale", "stale", "stale"]
    winner = targets[outcomes.index("ok")]
    deal.refresh_from_db()
    assert (deal.stage, deal.version) == (winner, 2)
    assert StageHistory.objects.filter(deal=deal, event="moved").count() == 1
    assert StageHistory.objects.filter(deal=deal, to_stage=winner).count() == 1
    # A skip writes its skipped rows once too.
    assert len(events(deal)) == 1 + list(Stage).index(winner)


def test_concurrent_terms_from_one_version_log_one_discount(on_postgres, rep, manager):
    deal = deal_in_stage(rep, Stage.NEGOTIATION)
    copies = [Deal.objects.get(pk=deal.pk) for _ in range(2)]
    terms = {
        id(copies[0]): (Decimal("8000.00"), 20),
        id(copies[1]): (Decimal("9000.00"), 10),
    }

    outcomes, overlapped = _race(
        lambda copy: domain.agree_terms(
            copy,
            agreed_value=terms[id(copy)][0],
            discount_pct=terms[id(copy)][1],
            by=rep,
            at=days_ago(0, hour=0),
        ),
        copies,
    )

    assert sorted(outcomes) == ["ok", "stale"]
    assert overlapped == [True]
    value, discount = terms[id(copies[outcomes.index("ok")])]
    deal.refresh_from_db()
    assert (deal.agreed_value, deal.discount_pct) == (value, discount)
    assert sorted(DealChange.objects.filter(deal=deal).values_list("field", "new_value")) == [
        ("agreed_value", str(value)),
        ("discount_pct", f"{discount}.00"),
    ]
