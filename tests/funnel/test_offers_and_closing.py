"""What the later stages capture: offer versions, negotiation rounds, agreed terms, the
closing document and the win, and the change log of tracked edits (domain.md)."""

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from funnel import domain
from funnel.domain import DomainError
from funnel.models import ClosingDocument, Deal, DealChange, ExchangeRate, Offer
from funnel.money import local_date
from funnel.stages import Stage, Status
from tests.factories import days_ago, deal_in_stage, lost_reason, make_deal, won_deal
from tests.funnel.test_transitions import MINUTE, codes, events, snapshot

pytestmark = pytest.mark.django_db


def offers(deal):
    return list(
        Offer.objects.filter(deal=deal)
        .order_by("version")
        .values_list("version", "status", "value", "prep_started_at", "sent_at", "responded_at")
    )


def changes(deal):
    return list(
        DealChange.objects.filter(deal=deal)
        .order_by("id")
        .values_list("field", "old_value", "new_value", "by")
    )


def current_value(deal):
    return Deal.objects.get(pk=deal.pk).current_value_base


def in_offer(owner, **kw):
    """A deal that entered ``offer`` 17 days ago (created 20 days ago)."""
    return deal_in_stage(owner, Stage.OFFER, start_days_ago=20, **kw)


def in_negotiation(owner, **kw):
    """A deal whose offer v1 (10,000) was sent 16 days ago; it entered negotiation 15
    days ago."""
    return deal_in_stage(owner, Stage.NEGOTIATION, start_days_ago=20, **kw)


def in_closing(owner, **kw):
    """A deal that agreed 9,000 at 10 % 14 days ago and entered closing 13 days ago."""
    return deal_in_stage(owner, Stage.CLOSING, start_days_ago=20, **kw)


# Offers -------------------------------------------------------------------------------


def test_offer_versions_are_numbered_one_two_three(rep):
    deal = in_offer(rep)
    first = domain.start_offer(deal, value=Decimal("9000"), by=rep, at=days_ago(16))
    domain.send_offer(first, by=rep, at=days_ago(15))
    second = domain.start_offer(deal, value=Decimal("9500"), by=rep, at=days_ago(14))
    domain.send_offer(second, by=rep, at=days_ago(13))
    third = domain.start_offer(deal, value=Decimal("9200.50"), by=rep, at=days_ago(12))

    assert [first.version, second.version, third.version] == [1, 2, 3]
    assert offers(deal) == [
        (1, "superseded", Decimal("9000.00"), days_ago(17), days_ago(15), None),
        (2, "sent", Decimal("9500.00"), days_ago(14), days_ago(13), None),
        (3, "draft", Decimal("9200.50"), days_ago(12), None, None),
    ]
    assert third.created_by == rep


def test_the_first_versions_preparation_starts_when_the_deal_entered_offer(rep):
    deal = in_offer(rep)

    offer = domain.start_offer(deal, value=Decimal("9000"), by=rep, at=days_ago(16))

    offer.refresh_from_db()
    assert offer.prep_started_at == deal.entered_offer_at == days_ago(17)
    assert offer.status == "draft"
    assert offer.value_base == Decimal("9000.00")


@pytest.mark.parametrize("stage", [Stage.LEAD, Stage.QUALIFICATION, Stage.NEEDS])
def test_an_offer_cannot_be_started_before_the_deal_reaches_offer(rep, stage):
    deal = deal_in_stage(rep, stage)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.start_offer(deal, value=Decimal("9000"), by=rep, at=days_ago(1))

    assert codes(excinfo) == ["too_early"]
    assert snapshot(deal) == before


def test_an_offer_cannot_be_prepared_before_the_deal_entered_offer(rep):
    deal = in_offer(rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.start_offer(
            deal, value=Decimal("9000"), by=rep, prep_started_at=deal.entered_offer_at - MINUTE
        )

    assert codes(excinfo) == ["out_of_order"]
    assert snapshot(deal) == before


def test_an_offer_for_a_closed_deal_is_refused(rep):
    deal = in_offer(rep)
    domain.mark_lost(deal, lost_reason("price"), by=rep, at=days_ago(10))
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.start_offer(deal, value=Decimal("9000"), by=rep)

    assert codes(excinfo) == ["closed"]
    assert snapshot(deal) == before


@pytest.mark.parametrize(
    ("value", "code"),
    [(Decimal("-1"), "negative"), (None, "required"), (Decimal("1.005"), "max_decimal_places")],
)
def test_an_offer_needs_a_valid_value(rep, value, code):
    deal = in_offer(rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.start_offer(deal, value=value, by=rep)

    assert codes(excinfo) == [code]
    assert snapshot(deal) == before


def test_sending_an_offer_before_its_preparation_started_is_refused(rep):
    deal = in_offer(rep)
    offer = domain.start_offer(deal, value=Decimal("9000"), by=rep, at=days_ago(16))
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.send_offer(offer, by=rep, at=offer.prep_started_at - MINUTE)

    assert codes(excinfo) == ["out_of_order"]
    assert snapshot(deal) == before


def test_sending_an_offer_in_the_future_is_refused(rep):
    deal = in_offer(rep)
    offer = domain.start_offer(deal, value=Decimal("9000"), by=rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.send_offer(offer, by=rep, at=timezone.now() + datetime.timedelta(hours=1))

    assert codes(excinfo) == ["future"]
    assert snapshot(deal) == before


def test_an_offer_is_sent_only_once(rep):
    deal = in_offer(rep)
    offer = domain.start_offer(deal, value=Decimal("9000"), by=rep)
    domain.send_offer(offer, by=rep, at=days_ago(15))
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.send_offer(offer, by=rep, at=days_ago(14))

    assert codes(excinfo) == ["not_draft"]
    assert snapshot(deal) == before


def test_sending_a_version_supersedes_the_earlier_draft_and_sent_ones(rep):
    deal = in_offer(rep)
    v1 = domain.start_offer(deal, value=Decimal("9000"), by=rep)
    domain.send_offer(v1, by=rep, at=days_ago(16))
    domain.start_offer(deal, value=Decimal("9100"), by=rep, at=days_ago(15))
    v3 = domain.start_offer(deal, value=Decimal("9200"), by=rep, at=days_ago(14))

    domain.send_offer(v3, by=rep, at=days_ago(13))

    assert [(v, status) for v, status, *_ in offers(deal)] == [
        (1, "superseded"),
        (2, "superseded"),
        (3, "sent"),
    ]


def test_sending_a_version_keeps_the_clients_earlier_answers(rep):
    deal = in_offer(rep)
    v1 = domain.start_offer(deal, value=Decimal("9000"), by=rep)
    domain.send_offer(v1, by=rep, at=days_ago(16))
    domain.reject_offer(v1, by=rep, at=days_ago(15))
    v2 = domain.start_offer(deal, value=Decimal("8000"), by=rep, at=days_ago(14))

    domain.send_offer(v2, by=rep, at=days_ago(13))

    assert [(v, status) for v, status, *_ in offers(deal)] == [(1, "rejected"), (2, "sent")]


def test_each_step_of_an_offer_records_who_recorded_it(rep, manager):
    deal = in_offer(rep)
    v1 = domain.start_offer(deal, value=Decimal("9000"), by=rep)
    assert (v1.sent_by, v1.responded_by) == (None, None)
    domain.send_offer(v1, by=manager, at=days_ago(16))
    domain.reject_offer(v1, by=rep, at=days_ago(15))

    v1.refresh_from_db()
    assert (v1.created_by, v1.sent_by, v1.responded_by) == (rep, manager, rep)


def test_the_current_value_follows_the_latest_sent_offer_until_terms_are_agreed(rep):
    deal = in_offer(rep, value=Decimal("10000"))
    assert current_value(deal) == Decimal("10000.00")

    v1 = domain.start_offer(deal, value=Decimal("9000"), by=rep)
    assert current_value(deal) == Decimal("10000.00")  # a draft is not a sent offer

    domain.send_offer(v1, by=rep, at=days_ago(16))
    assert current_value(deal) == Decimal("9000.00")

    v2 = domain.start_offer(deal, value=Decimal("11000"), by=rep, at=days_ago(15))
    domain.send_offer(v2, by=rep, at=days_ago(14))
    assert current_value(deal) == Decimal("11000.00")

    domain.agree_terms(deal, agreed_value=Decimal("10500"), by=rep, at=days_ago(13))
    assert current_value(deal) == Decimal("10500.00")

    v3 = domain.start_offer(deal, value=Decimal("9500"), by=rep, at=days_ago(12))
    domain.send_offer(v3, by=rep, at=days_ago(11))
    assert current_value(deal) == Decimal("10500.00")


def test_accepting_an_offer_makes_its_value_the_agreed_value(rep, manager):
    deal = in_offer(rep)
    offer = domain.start_offer(deal, value=Decimal("9000"), by=rep)
    domain.send_offer(offer, by=rep, at=days_ago(16))
    version = Deal.objects.get(pk=deal.pk).version

    domain.accept_offer(offer, by=manager, at=days_ago(15))

    offer.refresh_from_db()
    assert (offer.status, offer.responded_at) == ("accepted", days_ago(15))
    assert (offer.created_by, offer.sent_by, offer.responded_by) == (rep, rep, manager)
    deal = Deal.objects.get(pk=deal.pk)
    assert deal.stage == Stage.OFFER
    assert deal.agreed_value == Decimal("9000.00")
    assert deal.agreed_value_base == Decimal("9000.00")
    assert deal.agreed_at == days_ago(15)
    assert deal.discount_pct is None
    assert deal.current_value_base == Decimal("9000.00")
    assert deal.last_event_at == days_ago(15)
    assert deal.version == version + 1
    assert changes(deal) == [("agreed_value", "", "9000.00", manager.pk)]


def test_accepting_an_offer_keeps_terms_agreed_earlier(rep):
    deal = in_negotiation(rep)
    domain.agree_terms(deal, agreed_value=Decimal("9500"), by=rep, at=days_ago(14))
    v2 = domain.start_offer(deal, value=Decimal("9800"), by=rep, at=days_ago(13))
    domain.send_offer(v2, by=rep, at=days_ago(12))
    before = snapshot(deal)

    domain.accept_offer(v2, by=rep, at=days_ago(11))

    assert snapshot(deal)["deal"] == before["deal"]
    assert Deal.objects.get(pk=deal.pk).agreed_value == Decimal("9500.00")
    assert Offer.objects.get(pk=v2.pk).status == "accepted"


def test_rejecting_an_offer_records_the_answer_and_leaves_the_deal(rep):
    deal = in_offer(rep)
    offer = domain.start_offer(deal, value=Decimal("9000"), by=rep)
    domain.send_offer(offer, by=rep, at=days_ago(16))
    before = snapshot(deal)

    domain.reject_offer(offer, by=rep, at=days_ago(15))

    offer.refresh_from_db()
    assert (offer.status, offer.responded_at) == ("rejected", days_ago(15))
    after = snapshot(deal)
    assert after["deal"] == before["deal"]
    assert after["history"] == before["history"]
    assert after["changes"] == before["changes"] == []


def test_a_response_before_the_offer_was_sent_is_refused(rep):
    deal = in_offer(rep)
    offer = domain.start_offer(deal, value=Decimal("9000"), by=rep)
    domain.send_offer(offer, by=rep, at=days_ago(16))
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.accept_offer(offer, by=rep, at=days_ago(16) - MINUTE)

    assert codes(excinfo) == ["out_of_order"]
    assert snapshot(deal) == before


@pytest.mark.parametrize("respond", [domain.accept_offer, domain.reject_offer])
def test_only_a_sent_offer_can_be_answered(rep, respond):
    deal = in_offer(rep)
    offer = domain.start_offer(deal, value=Decimal("9000"), by=rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        respond(offer, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["not_sent"]
    assert snapshot(deal) == before


def test_a_new_version_during_negotiation_does_not_move_the_deal(rep):
    deal = in_negotiation(rep)
    before = snapshot(deal)

    v2 = domain.start_offer(deal, value=Decimal("9700"), by=rep, at=days_ago(10))
    domain.send_offer(v2, by=rep, at=days_ago(9))

    after = snapshot(deal)
    assert after["history"] == before["history"]
    moved = {"current_value_base"}
    assert {k: v for k, v in after["deal"].items() if k not in moved} == {
        k: v for k, v in before["deal"].items() if k not in moved
    }
    assert after["deal"]["stage"] == Stage.NEGOTIATION
    assert after["deal"]["current_value_base"] == Decimal("9700.00")
    assert [(v, status) for v, status, *_ in offers(deal)] == [(1, "superseded"), (2, "sent")]
    assert v2.prep_started_at == days_ago(10)


# Negotiation rounds -------------------------------------------------------------------


def test_negotiation_rounds_are_numbered_one_two_three(rep):
    deal = in_negotiation(rep)

    rounds = [
        domain.add_round(
            deal, held_at=days_ago(14), proposed_value=Decimal("9800"), discount_pct=2, by=rep
        ),
        domain.add_round(
            deal, held_at=days_ago(13), proposed_value=Decimal("9500"), discount_pct=5, by=rep
        ),
        domain.add_round(
            deal,
            held_at=days_ago(12),
            proposed_value=Decimal("9250.50"),
            discount_pct=Decimal("7.5"),
            by=rep,
        ),
    ]

    assert [r.number for r in rounds] == [1, 2, 3]
    assert list(
        deal.rounds.order_by("number").values_list(
            "number", "held_at", "proposed_value", "proposed_value_base", "discount_pct", "by"
        )
    ) == [
        (1, days_ago(14), Decimal("9800.00"), Decimal("9800.00"), Decimal("2.00"), rep.pk),
        (2, days_ago(13), Decimal("9500.00"), Decimal("9500.00"), Decimal("5.00"), rep.pk),
        (3, days_ago(12), Decimal("9250.50"), Decimal("9250.50"), Decimal("7.50"), rep.pk),
    ]


@pytest.mark.parametrize("stage", [Stage.OFFER, Stage.CLOSING])
def test_a_round_is_logged_only_in_negotiation(rep, stage):
    deal = deal_in_stage(rep, stage)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.add_round(deal, held_at=days_ago(1), proposed_value=Decimal("9000"), by=rep)

    assert codes(excinfo) == ["not_negotiating"]
    assert snapshot(deal) == before


@pytest.mark.parametrize("discount", [Decimal("100.01"), 101, Decimal("-0.01"), -1])
def test_a_round_discount_outside_zero_to_one_hundred_is_refused(rep, discount):
    deal = in_negotiation(rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.add_round(
            deal, held_at=days_ago(1), proposed_value=Decimal("9000"), discount_pct=discount, by=rep
        )

    assert codes(excinfo) == ["range"]
    assert snapshot(deal) == before


@pytest.mark.parametrize("discount", [0, 100])
def test_a_round_discount_of_zero_or_one_hundred_is_accepted(rep, discount):
    deal = in_negotiation(rep)

    rnd = domain.add_round(
        deal, held_at=days_ago(1), proposed_value=Decimal("9000"), discount_pct=discount, by=rep
    )

    rnd.refresh_from_db()
    assert rnd.discount_pct == Decimal(discount)


def test_a_round_with_a_negative_value_is_refused(rep):
    deal = in_negotiation(rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.add_round(deal, held_at=days_ago(1), proposed_value=Decimal("-1"), by=rep)

    assert codes(excinfo) == ["negative"]
    assert snapshot(deal) == before


def test_a_round_before_the_negotiation_started_is_refused(rep):
    deal = in_negotiation(rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.add_round(
            deal,
            held_at=deal.entered_negotiation_at - MINUTE,
            proposed_value=Decimal("9000"),
            by=rep,
        )

    assert codes(excinfo) == ["out_of_order"]
    assert snapshot(deal) == before


def test_a_round_in_the_future_is_refused(rep):
    deal = in_negotiation(rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.add_round(
            deal,
            held_at=timezone.now() + datetime.timedelta(hours=1),
            proposed_value=Decimal("9000"),
            by=rep,
        )

    assert codes(excinfo) == ["future"]
    assert snapshot(deal) == before


# Agreed terms -------------------------------------------------------------------------


def test_agreeing_terms_records_the_agreed_value_and_discount_changes(rep, manager):
    deal = in_negotiation(rep)
    version = deal.version

    domain.agree_terms(
        deal, agreed_value=Decimal("8500"), discount_pct=Decimal("5.5"), by=manager, at=days_ago(10)
    )
    domain.agree_terms(deal, agreed_value=Decimal("8400"), by=rep, at=days_ago(9))

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.agreed_value == Decimal("8400.00")
    assert deal.agreed_value_base == Decimal("8400.00")
    assert deal.discount_pct == Decimal("5.50")
    assert deal.agreed_at == days_ago(9)
    assert deal.current_value_base == Decimal("8400.00")
    assert deal.version == version + 2
    assert changes(deal) == [
        ("agreed_value", "", "8500.00", manager.pk),
        ("discount_pct", "", "5.50", manager.pk),
        ("agreed_value", "8500.00", "8400.00", rep.pk),
    ]
    assert list(
        DealChange.objects.filter(deal=deal).order_by("id").values_list("at", flat=True)
    ) == [
        days_ago(10),
        days_ago(10),
        days_ago(9),
    ]


def test_agreeing_terms_before_the_offer_stage_is_refused(rep):
    deal = deal_in_stage(rep, Stage.NEEDS)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.agree_terms(deal, agreed_value=Decimal("9000"), by=rep, at=days_ago(1))

    assert codes(excinfo) == ["too_early"]
    assert snapshot(deal) == before


@pytest.mark.parametrize(
    ("terms", "code"),
    [
        ({"agreed_value": Decimal("9000"), "discount_pct": 101}, "range"),
        ({"agreed_value": Decimal("9000"), "discount_pct": -1}, "range"),
        ({"agreed_value": Decimal("-9000")}, "negative"),
        ({"agreed_value": None}, "required"),
    ],
)
def test_agreeing_invalid_terms_is_refused(rep, terms, code):
    deal = in_negotiation(rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.agree_terms(deal, by=rep, at=days_ago(1), **terms)

    assert codes(excinfo) == [code]
    assert snapshot(deal) == before
    assert deal.agreed_value is None


# Edits of tracked fields ----------------------------------------------------------------


def test_editing_tracked_fields_records_who_changed_what_from_what_to_what(rep, teammate, manager):
    deal = make_deal(rep, at=days_ago(10), estimated_value=Decimal("10000"))
    close = timezone.localdate() + datetime.timedelta(days=30)
    started = timezone.now()

    domain.update_deal(
        deal,
        by=manager,
        estimated_value=Decimal("12000"),
        discount_pct=5,
        owner=teammate,
        expected_close_date=close,
    )

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.estimated_value == Decimal("12000.00")
    assert deal.estimated_value_base == Decimal("12000.00")
    assert deal.current_value_base == Decimal("12000.00")
    assert deal.discount_pct == Decimal("5.00")
    assert deal.owner == teammate
    assert deal.expected_close_date == close
    assert deal.version == 2
    assert changes(deal) == [
        ("estimated_value", "10000.00", "12000.00", manager.pk),
        ("discount_pct", "", "5.00", manager.pk),
        ("owner", str(rep), str(teammate), manager.pk),
        ("expected_close_date", "", close.isoformat(), manager.pk),
    ]
    assert all(started <= c.at <= timezone.now() for c in DealChange.objects.filter(deal=deal))


def test_editing_an_untracked_field_writes_no_change_row(rep):
    deal = make_deal(rep, at=days_ago(10))

    domain.update_deal(deal, by=rep, title="Intranet, phase 2", industry="Logistics")

    deal = Deal.objects.get(pk=deal.pk)
    assert (deal.title, deal.industry) == ("Intranet, phase 2", "Logistics")
    assert deal.version == 2
    assert changes(deal) == []


def test_an_edit_that_changes_nothing_writes_nothing(rep):
    deal = make_deal(rep, at=days_ago(10), estimated_value=Decimal("10000"))
    before = snapshot(deal)

    domain.update_deal(deal, by=rep, estimated_value=Decimal("10000.00"), title=deal.title)

    assert snapshot(deal) == before


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        ({"discount_pct": 101}, "range"),
        ({"discount_pct": -1}, "range"),
        ({"estimated_value": Decimal("-1")}, "negative"),
        ({"estimated_value": Decimal("1.001")}, "max_decimal_places"),
    ],
)
def test_an_invalid_edit_is_refused(rep, edit, code):
    deal = make_deal(rep, at=days_ago(10))
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.update_deal(deal, by=rep, **edit)

    assert codes(excinfo) == [code]
    assert snapshot(deal) == before


def test_stage_and_status_cannot_be_edited(rep):
    deal = make_deal(rep, at=days_ago(10))
    before = snapshot(deal)

    with pytest.raises(TypeError):
        domain.update_deal(deal, by=rep, stage=Stage.CLOSING, status=Status.WON)

    assert snapshot(deal) == before


def test_the_currency_can_change_before_any_offer_and_reconverts_the_estimate(rep):
    deal = make_deal(rep, at=days_ago(10), estimated_value=Decimal("1000"))
    ExchangeRate.objects.create(currency="EUR", date=local_date(days_ago(12)), rate=Decimal("4.25"))

    domain.update_deal(deal, by=rep, currency="EUR")

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.currency == "EUR"
    assert deal.estimated_value_base == Decimal("4250.00")
    assert deal.current_value_base == Decimal("4250.00")
    assert changes(deal) == [("currency", "PLN", "EUR", rep.pk)]


def test_the_currency_cannot_change_once_an_offer_exists(rep):
    deal = in_offer(rep)
    domain.start_offer(deal, value=Decimal("9000"), by=rep)
    ExchangeRate.objects.create(currency="EUR", date=local_date(days_ago(30)), rate=Decimal("4"))
    deal.refresh_from_db()
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.update_deal(deal, by=rep, currency="EUR")

    assert codes(excinfo) == ["currency_locked"]
    assert snapshot(deal) == before
    assert deal.currency == "PLN"


# Closing document and win ---------------------------------------------------------------


def _document(deal, by, *, document_type="contract", days=10, value=Decimal("8800")):
    return domain.save_closing_document(
        deal,
        document_type=document_type,
        issue_date=timezone.localdate() - datetime.timedelta(days=days),
        final_value=value,
        number="2025/07/1",
        by=by,
    )


def test_recording_the_closing_document_logs_its_final_value(rep):
    deal = in_closing(rep)
    version = Deal.objects.get(pk=deal.pk).version

    document = _document(deal, rep)

    document.refresh_from_db()
    assert document.document_type == "contract"
    assert document.final_value == Decimal("8800.00")
    assert document.final_value_base == Decimal("8800.00")
    assert (document.signed_at, document.paid_at) == (None, None)
    assert Deal.objects.get(pk=deal.pk).version == version + 1
    assert changes(deal)[-1] == ("final_value", "", "8800.00", rep.pk)


def test_a_closing_document_before_closing_is_refused(rep):
    deal = in_negotiation(rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        _document(deal, rep)

    assert codes(excinfo) == ["not_closing"]
    assert snapshot(deal) == before


def test_a_closing_document_issued_before_the_deal_entered_closing_is_refused(rep):
    deal = in_closing(rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        _document(deal, rep, days=14)

    assert codes(excinfo) == ["out_of_order"]
    assert snapshot(deal) == before


def test_winning_with_a_contract_signs_it(rep, manager):
    deal = in_closing(rep)
    _document(deal, rep)
    version = Deal.objects.get(pk=deal.pk).version
    at = days_ago(5)

    domain.win(deal, by=manager, at=at)

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.status == Status.WON
    assert deal.stage == Stage.CLOSING
    assert deal.won_at == at
    assert deal.last_event_at == at
    assert deal.current_value_base == Decimal("8800.00")
    assert deal.version == version + 1
    document = ClosingDocument.objects.get(deal=deal)
    assert (document.signed_at, document.paid_at) == (at, None)
    assert document.final_value_base == Decimal("8800.00")
    last = deal.history.order_by("-id").first()
    assert (last.event, last.from_stage, last.to_stage, last.at, last.by) == (
        "won",
        "closing",
        "closing",
        at,
        manager,
    )


def test_winning_with_a_pro_forma_marks_it_paid(rep):
    deal = in_closing(rep)
    _document(deal, rep, document_type="proforma", value=Decimal("8700"))
    at = days_ago(4)

    domain.win(deal, by=rep, at=at)

    deal = Deal.objects.get(pk=deal.pk)
    assert (deal.status, deal.won_at, deal.current_value_base) == (
        Status.WON,
        at,
        Decimal("8700.00"),
    )
    document = ClosingDocument.objects.get(deal=deal)
    assert (document.signed_at, document.paid_at) == (None, at)


def test_winning_before_the_document_was_issued_is_refused(rep):
    deal = in_closing(rep)
    _document(deal, rep, days=5)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.win(deal, by=rep, at=days_ago(6))

    assert codes(excinfo) == ["out_of_order"]
    assert snapshot(deal) == before


def test_winning_without_a_closing_document_is_refused(rep):
    deal = in_closing(rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.win(deal, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["no_document"]
    assert snapshot(deal) == before


@pytest.mark.parametrize("stage", [Stage.LEAD, Stage.OFFER, Stage.NEGOTIATION])
def test_winning_before_closing_is_refused(rep, stage):
    deal = deal_in_stage(rep, stage)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.win(deal, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["not_closing"]
    assert snapshot(deal) == before


def test_winning_in_the_future_is_refused(rep):
    deal = in_closing(rep)
    _document(deal, rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.win(deal, by=rep, at=timezone.now() + datetime.timedelta(hours=1))

    assert codes(excinfo) == ["future"]
    assert snapshot(deal) == before


def test_a_won_deal_cannot_be_won_lost_or_moved_again(rep):
    deal = won_deal(rep)
    before = snapshot(deal)

    for attempt in (
        lambda: domain.win(deal, by=rep, at=days_ago(1)),
        lambda: domain.mark_lost(deal, lost_reason("price"), by=rep, at=days_ago(1)),
        lambda: domain.move_forward(deal, Stage.CLOSING, by=rep, at=days_ago(1)),
        lambda: domain.agree_terms(deal, agreed_value=Decimal("1"), by=rep, at=days_ago(1)),
        lambda: domain.save_closing_document(
            deal,
            document_type="contract",
            issue_date=timezone.localdate(),
            final_value=Decimal("1"),
            by=rep,
        ),
    ):
        with pytest.raises(DomainError) as excinfo:
            attempt()
        assert codes(excinfo) == ["closed"]

    assert snapshot(deal) == before
    assert events(deal)[-1] == ("won", "closing", "closing")


# Appending rows from a stale page -------------------------------------------------------


def test_a_stale_version_refuses_a_new_offer_round_or_activity_and_writes_nothing(rep):
    from funnel.domain import StaleDealError
    from funnel.models import Activity, NegotiationRound

    deal = deal_in_stage(rep, Stage.NEGOTIATION)
    seen = deal.version - 1
    with pytest.raises(StaleDealError):
        domain.start_offer(deal, value=Decimal("9000"), by=rep, expected_version=seen)
    with pytest.raises(StaleDealError):
        domain.add_round(
            deal,
            held_at=days_ago(1),
            proposed_value=Decimal("9000"),
            by=rep,
            expected_version=seen,
        )
    with pytest.raises(StaleDealError):
        domain.log_activity(deal, kind="call", held_at=days_ago(1), by=rep, expected_version=seen)
    assert not NegotiationRound.objects.filter(deal=deal).exists()
    assert not Activity.objects.filter(deal=deal, held_at=days_ago(1)).exists()
    offers_before = Offer.objects.filter(deal=deal).count()

    domain.start_offer(deal, value=Decimal("9000"), by=rep, expected_version=deal.version)
    domain.log_activity(
        deal, kind="call", held_at=days_ago(1), by=rep, expected_version=deal.version
    )
    assert Offer.objects.filter(deal=deal).count() == offers_before + 1
    assert Activity.objects.filter(deal=deal, held_at=days_ago(1)).count() == 1
