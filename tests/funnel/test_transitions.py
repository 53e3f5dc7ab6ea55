"""Stage transitions of a deal: creation, forward moves and skips, losing, disqualifying,
reopening, and the history rows each one writes (domain.md, "The funnel")."""

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from funnel import domain, stages
from funnel.domain import DomainError
from funnel.models import (
    ClosingDocument,
    Deal,
    DealChange,
    ExchangeRate,
    LostReason,
    StageHistory,
)
from funnel.money import local_date
from funnel.stages import Stage, Status
from tests.factories import (
    CompanyFactory,
    days_ago,
    deal_in_stage,
    lost_reason,
    make_deal,
    won_deal,
)

pytestmark = pytest.mark.django_db

MINUTE = datetime.timedelta(minutes=1)


#: Every deal field a refused change must leave as it was.
DEAL_FIELDS = (
    "stage",
    "status",
    "version",
    "last_event_at",
    *stages.STAMP_FIELDS,
    "won_at",
    "lost_at",
    "lost_reason_id",
    "lost_stage",
    "lost_note",
    "title",
    "owner_id",
    "currency",
    "estimated_value",
    "estimated_value_base",
    "agreed_value",
    "agreed_value_base",
    "agreed_at",
    "discount_pct",
    "expected_close_date",
    "current_value_base",
)


def snapshot(deal):
    """The deal and everything hanging off it, read back from the database: a refused
    change must leave all of it exactly as it was."""
    fresh = Deal.objects.get(pk=deal.pk)
    return {
        "deal": {name: getattr(fresh, name) for name in DEAL_FIELDS},
        "history": list(
            StageHistory.objects.filter(deal=fresh)
            .order_by("id")
            .values_list("event", "from_stage", "to_stage", "at", "by", "lost_reason", "note")
        ),
        "changes": list(
            DealChange.objects.filter(deal=fresh)
            .order_by("id")
            .values_list("field", "old_value", "new_value", "at", "by")
        ),
        "offers": list(
            fresh.offers.order_by("version").values_list(
                "version",
                "status",
                "value",
                "value_base",
                "prep_started_at",
                "sent_at",
                "responded_at",
            )
        ),
        "rounds": list(
            fresh.rounds.order_by("number").values_list(
                "number", "held_at", "proposed_value", "discount_pct"
            )
        ),
        "document": list(
            ClosingDocument.objects.filter(deal=fresh).values_list(
                "document_type",
                "number",
                "issue_date",
                "final_value",
                "final_value_base",
                "signed_at",
                "paid_at",
            )
        ),
    }


def codes(excinfo):
    """The codes of a refusal's messages, so a test knows *which* rule refused."""
    exc = excinfo.value
    if hasattr(exc, "error_dict"):
        return [e.code for errors in exc.error_dict.values() for e in errors]
    return [e.code for e in exc.error_list]


def events(deal):
    return [
        (h.event, h.from_stage, h.to_stage)
        for h in StageHistory.objects.filter(deal=deal).order_by("at", "id")
    ]


def lost_deal(owner, stage=Stage.NEEDS, *, at=None, reason="price"):
    deal = deal_in_stage(owner, stage)
    domain.mark_lost(deal, lost_reason(reason), by=owner, at=at or days_ago(20), note="Too dear")
    return deal


# create_deal --------------------------------------------------------------------------


def test_create_deal_records_a_lead_with_a_created_history_row(rep, manager):
    at = days_ago(10)
    company = CompanyFactory(name="Acme")
    deal = domain.create_deal(
        by=manager,
        owner=rep,
        company=company,
        title="Intranet",
        at=at,
        estimated_value=Decimal("12500.50"),
    )

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.stage == Stage.LEAD
    assert deal.status == Status.OPEN
    assert deal.entered_lead_at == at
    assert deal.last_event_at == at
    assert [deal.stamp(s) for s in stages.ORDER[1:]] == [None] * 5
    assert deal.currency == "PLN"
    assert deal.estimated_value == Decimal("12500.50")
    assert deal.estimated_value_base == Decimal("12500.50")
    assert deal.current_value_base == Decimal("12500.50")
    assert deal.owner == rep
    assert deal.created_by == manager
    assert deal.version == 1
    assert list(
        deal.history.values_list("event", "from_stage", "to_stage", "at", "by", "lost_reason")
    ) == [("created", None, "lead", at, manager.pk, None)]


def test_create_deal_converts_a_foreign_estimate_at_the_rate_of_its_day(rep):
    at = days_ago(10)
    ExchangeRate.objects.create(
        currency="EUR", date=local_date(at) - datetime.timedelta(days=3), rate=Decimal("4.31234567")
    )
    # A later rate is not the rate of the lead's day.
    ExchangeRate.objects.create(
        currency="EUR", date=local_date(at) + datetime.timedelta(days=1), rate=Decimal("9")
    )

    deal = make_deal(rep, at=at, currency="EUR", estimated_value=Decimal("1234.56"))

    deal.refresh_from_db()
    assert deal.currency == "EUR"
    assert deal.estimated_value == Decimal("1234.56")
    # 1234.56 * 4.31234567 = 5323.8494..., rounded half up to the cent.
    assert deal.estimated_value_base == Decimal("5323.85")
    assert deal.current_value_base == Decimal("5323.85")


def test_create_deal_in_a_currency_without_a_rate_is_refused_and_creates_nothing(rep):
    at = days_ago(10)
    ExchangeRate.objects.create(
        currency="EUR", date=local_date(at) + datetime.timedelta(days=1), rate=Decimal("4.3")
    )

    with pytest.raises(ValidationError, match="No exchange rate for EUR on or before") as excinfo:
        make_deal(rep, at=at, currency="EUR", estimated_value=Decimal("1000"))

    assert codes(excinfo) == ["no_rate"]
    assert Deal.objects.count() == 0
    assert StageHistory.objects.count() == 0


def test_create_deal_with_a_first_touch_after_the_lead_is_refused(rep):
    at = days_ago(10)
    with pytest.raises(DomainError) as excinfo:
        make_deal(rep, at=at, first_touch_at=at + MINUTE)

    assert codes(excinfo) == ["out_of_order"]
    assert Deal.objects.count() == 0
    assert StageHistory.objects.count() == 0


def test_create_deal_keeps_a_first_touch_before_the_lead(rep):
    at = days_ago(10)
    deal = make_deal(rep, at=at, first_touch_at=at - datetime.timedelta(days=4))

    deal.refresh_from_db()
    assert deal.first_touch_at == at - datetime.timedelta(days=4)


def test_create_deal_in_the_future_is_refused(rep):
    with pytest.raises(DomainError) as excinfo:
        make_deal(rep, at=timezone.now() + datetime.timedelta(hours=1))

    assert codes(excinfo) == ["future"]
    assert Deal.objects.count() == 0
    assert StageHistory.objects.count() == 0


def test_create_deal_with_a_negative_estimate_is_refused(rep):
    with pytest.raises(DomainError) as excinfo:
        make_deal(rep, estimated_value=Decimal("-0.01"))

    assert codes(excinfo) == ["negative"]
    assert Deal.objects.count() == 0
    assert StageHistory.objects.count() == 0


# move_forward -------------------------------------------------------------------------


def test_moving_forward_stamps_the_target_stage_and_writes_a_moved_row(rep, manager):
    created = days_ago(10)
    deal = make_deal(rep, at=created)
    at = days_ago(9)

    domain.move_forward(deal, Stage.QUALIFICATION, by=manager, at=at)

    assert deal.stage == Stage.QUALIFICATION
    deal = Deal.objects.get(pk=deal.pk)
    assert deal.stage == Stage.QUALIFICATION
    assert deal.status == Status.OPEN
    assert deal.entered_lead_at == created
    assert deal.entered_qualification_at == at
    assert deal.entered_needs_at is None
    assert deal.last_event_at == at
    assert deal.version == 2
    assert list(
        deal.history.order_by("id").values_list("event", "from_stage", "to_stage", "at", "by")
    ) == [
        ("created", None, "lead", created, rep.pk),
        ("moved", "lead", "qualification", at, manager.pk),
    ]


def test_a_skip_stamps_every_skipped_stage_with_the_same_moment(rep):
    created = days_ago(10)
    deal = make_deal(rep, at=created)
    at = days_ago(8)

    domain.move_forward(deal, Stage.OFFER, by=rep, at=at)

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.stage == Stage.OFFER
    assert deal.stage_stamps() == [
        (Stage.LEAD, created),
        (Stage.QUALIFICATION, at),
        (Stage.NEEDS, at),
        (Stage.OFFER, at),
        (Stage.NEGOTIATION, None),
        (Stage.CLOSING, None),
    ]
    assert deal.version == 2
    assert list(
        deal.history.order_by("id").values_list("event", "from_stage", "to_stage", "at", "by")
    ) == [
        ("created", None, "lead", created, rep.pk),
        ("skipped", "lead", "qualification", at, rep.pk),
        ("skipped", "qualification", "needs", at, rep.pk),
        ("moved", "needs", "offer", at, rep.pk),
    ]


def test_skipping_negotiation_with_a_sent_offer_and_agreed_terms_reaches_closing(rep):
    deal = deal_in_stage(rep, Stage.OFFER, start_days_ago=20)
    offer = domain.start_offer(deal, value=Decimal("9000"), by=rep)
    domain.send_offer(offer, by=rep, at=days_ago(15))
    domain.agree_terms(deal, agreed_value=Decimal("8800"), by=rep, at=days_ago(14))
    at = days_ago(13)

    domain.move_forward(deal, Stage.CLOSING, by=rep, at=at)

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.stage == Stage.CLOSING
    assert deal.entered_negotiation_at == at
    assert deal.entered_closing_at == at
    assert events(deal)[-2:] == [
        ("skipped", "offer", "negotiation"),
        ("moved", "negotiation", "closing"),
    ]


def test_moving_forward_never_rewrites_earlier_stamps(rep):
    deal = deal_in_stage(rep, Stage.QUALIFICATION, start_days_ago=10)
    lead_at, qualification_at = deal.entered_lead_at, deal.entered_qualification_at
    at = days_ago(5)

    domain.move_forward(deal, Stage.OFFER, by=rep, at=at)

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.entered_lead_at == lead_at == days_ago(10)
    assert deal.entered_qualification_at == qualification_at == days_ago(9)
    assert deal.entered_needs_at == at
    assert deal.entered_offer_at == at


@pytest.mark.parametrize("target", [Stage.LEAD, Stage.QUALIFICATION])
def test_a_backward_move_is_refused(rep, target):
    deal = deal_in_stage(rep, Stage.NEEDS)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.move_forward(deal, target, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["backward"]
    assert snapshot(deal) == before
    assert deal.stage == Stage.NEEDS


def test_a_move_to_the_current_stage_is_refused(rep):
    deal = deal_in_stage(rep, Stage.NEEDS)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.move_forward(deal, Stage.NEEDS, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["backward"]
    assert snapshot(deal) == before


def test_skipping_into_negotiation_without_any_offer_is_refused(rep):
    deal = deal_in_stage(rep, Stage.NEEDS)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.move_forward(deal, Stage.NEGOTIATION, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["no_sent_offer"]
    assert snapshot(deal) == before


def test_entering_negotiation_with_only_a_draft_offer_is_refused(rep):
    deal = deal_in_stage(rep, Stage.OFFER)
    domain.start_offer(deal, value=Decimal("9000"), by=rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.move_forward(deal, Stage.NEGOTIATION, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["no_sent_offer"]
    assert snapshot(deal) == before


def test_entering_negotiation_before_the_offer_was_sent_is_refused(rep):
    deal = deal_in_stage(rep, Stage.OFFER, start_days_ago=20)
    offer = domain.start_offer(deal, value=Decimal("9000"), by=rep)
    domain.send_offer(offer, by=rep, at=days_ago(10))
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.move_forward(deal, Stage.NEGOTIATION, by=rep, at=days_ago(11))

    assert codes(excinfo) == ["no_sent_offer"]
    assert snapshot(deal) == before


def test_skipping_negotiation_without_a_sent_offer_is_refused(rep):
    deal = deal_in_stage(rep, Stage.OFFER, start_days_ago=20)
    domain.start_offer(deal, value=Decimal("9000"), by=rep)
    domain.agree_terms(deal, agreed_value=Decimal("8800"), by=rep, at=days_ago(10))
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.move_forward(deal, Stage.CLOSING, by=rep, at=days_ago(9))

    assert codes(excinfo) == ["no_sent_offer"]
    assert snapshot(deal) == before


def test_entering_closing_without_agreed_terms_is_refused(rep):
    deal = deal_in_stage(rep, Stage.NEGOTIATION)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.move_forward(deal, Stage.CLOSING, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["no_agreed_terms"]
    assert snapshot(deal) == before


def test_moving_a_won_deal_is_refused(rep):
    deal = won_deal(rep)
    # A won deal sits in closing, the last stage: any target is refused as closed first.
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.move_forward(deal, Stage.CLOSING, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["closed"]
    assert snapshot(deal) == before


def test_moving_a_lost_deal_is_refused(rep):
    deal = lost_deal(rep, Stage.NEEDS)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.move_forward(deal, Stage.OFFER, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["closed"]
    assert snapshot(deal) == before
    assert deal.status == Status.LOST


def test_moving_forward_at_a_future_moment_is_refused(rep):
    deal = deal_in_stage(rep, Stage.QUALIFICATION)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.move_forward(
            deal, Stage.NEEDS, by=rep, at=timezone.now() + datetime.timedelta(minutes=5)
        )

    assert codes(excinfo) == ["future"]
    assert snapshot(deal) == before


def test_moving_forward_before_the_deals_last_event_is_refused(rep):
    deal = deal_in_stage(rep, Stage.QUALIFICATION, start_days_ago=10)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.move_forward(deal, Stage.NEEDS, by=rep, at=deal.entered_qualification_at - MINUTE)

    assert codes(excinfo) == ["out_of_order"]
    assert snapshot(deal) == before


def test_moving_on_at_the_moment_the_stage_was_entered_is_refused(rep):
    # A stay has a positive length: equal stamps mean a skip (docs/kpis.md, "Skips").
    deal = deal_in_stage(rep, Stage.QUALIFICATION, start_days_ago=10)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.move_forward(deal, Stage.NEEDS, by=rep, at=deal.entered_qualification_at)

    assert codes(excinfo) == ["no_stay"]
    assert snapshot(deal) == before


def test_moving_on_a_minute_after_entering_the_stage_is_allowed(rep):
    deal = deal_in_stage(rep, Stage.QUALIFICATION, start_days_ago=10)
    at = deal.entered_qualification_at + MINUTE

    domain.move_forward(deal, Stage.NEEDS, by=rep, at=at)

    deal.refresh_from_db()
    assert deal.entered_needs_at == at


def test_each_transition_increments_the_version_by_exactly_one(rep, manager):
    deal = make_deal(rep, at=days_ago(10))
    versions = [Deal.objects.get(pk=deal.pk).version]

    domain.move_forward(deal, Stage.QUALIFICATION, by=rep, at=days_ago(9))
    versions.append(Deal.objects.get(pk=deal.pk).version)
    domain.move_forward(deal, Stage.OFFER, by=rep, at=days_ago(8))
    versions.append(Deal.objects.get(pk=deal.pk).version)
    domain.mark_lost(deal, lost_reason("timing"), by=rep, at=days_ago(7))
    versions.append(Deal.objects.get(pk=deal.pk).version)
    domain.reopen(deal, by=manager, at=days_ago(6))
    versions.append(Deal.objects.get(pk=deal.pk).version)

    assert versions == [1, 2, 3, 4, 5]
    assert deal.version == 5


# mark_lost ----------------------------------------------------------------------------


@pytest.mark.parametrize("stage", list(Stage))
def test_a_deal_can_be_lost_from_any_open_stage(rep, stage):
    deal = deal_in_stage(rep, stage)
    version = deal.version
    history_rows = deal.history.count()
    stamps = deal.stage_stamps()
    reason = lost_reason("competitor")
    at = days_ago(1)

    domain.mark_lost(deal, reason, by=rep, at=at, note="Went with a local vendor")

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.status == Status.LOST
    assert deal.stage == stage
    assert deal.lost_stage == stage
    assert deal.lost_reason == reason
    assert deal.lost_at == at
    assert deal.lost_note == "Went with a local vendor"
    assert deal.last_event_at == at
    assert deal.stage_stamps() == stamps
    assert deal.version == version + 1
    assert deal.history.count() == history_rows + 1
    last = deal.history.order_by("-id").first()
    assert (
        last.event,
        last.from_stage,
        last.to_stage,
        last.at,
        last.by,
        last.lost_reason,
        last.note,
    ) == ("lost", stage, stage, at, rep, reason, "Went with a local vendor")


def test_the_lost_note_is_optional(rep):
    deal = deal_in_stage(rep, Stage.QUALIFICATION)

    domain.mark_lost(deal, lost_reason("no_budget"), by=rep, at=days_ago(1))

    deal.refresh_from_db()
    assert deal.status == Status.LOST
    assert deal.lost_note == ""
    assert deal.history.order_by("-id").first().note == ""


@pytest.mark.parametrize("reason", [None, "price"])
def test_losing_a_deal_without_a_reason_from_the_list_is_refused(rep, reason):
    deal = deal_in_stage(rep, Stage.NEEDS)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.mark_lost(deal, reason, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["required"]
    assert snapshot(deal) == before
    assert deal.status == Status.OPEN


def test_losing_a_lost_deal_again_is_refused(rep):
    deal = lost_deal(rep, Stage.NEEDS)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.mark_lost(deal, lost_reason("other"), by=rep, at=days_ago(1))

    assert codes(excinfo) == ["closed"]
    assert snapshot(deal) == before


def test_losing_a_won_deal_is_refused(rep):
    deal = won_deal(rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.mark_lost(deal, lost_reason("other"), by=rep, at=days_ago(1))

    assert codes(excinfo) == ["closed"]
    assert snapshot(deal) == before
    assert deal.status == Status.WON


def test_losing_a_deal_before_its_last_event_is_refused(rep):
    deal = deal_in_stage(rep, Stage.NEEDS, start_days_ago=10)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.mark_lost(deal, lost_reason("price"), by=rep, at=deal.entered_needs_at - MINUTE)

    assert codes(excinfo) == ["out_of_order"]
    assert snapshot(deal) == before


# disqualify ---------------------------------------------------------------------------


def test_disqualifying_a_lead_moves_it_to_qualification_and_loses_it_there(rep):
    created = days_ago(10)
    deal = make_deal(rep, at=created)
    at = days_ago(9)

    domain.disqualify(deal, by=rep, at=at, note="A student project")

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.status == Status.LOST
    assert deal.stage == Stage.QUALIFICATION
    assert deal.lost_stage == Stage.QUALIFICATION
    assert deal.lost_reason.code == LostReason.NOT_QUALIFIED
    assert deal.lost_at == at
    assert deal.lost_note == "A student project"
    assert deal.entered_qualification_at == at
    assert deal.entered_needs_at is None
    assert deal.version == 3
    not_qualified = LostReason.objects.get(code="not_qualified")
    assert list(
        deal.history.order_by("id").values_list(
            "event", "from_stage", "to_stage", "at", "by", "lost_reason", "note"
        )
    ) == [
        ("created", None, "lead", created, rep.pk, None, ""),
        ("moved", "lead", "qualification", at, rep.pk, None, ""),
        (
            "lost",
            "qualification",
            "qualification",
            at,
            rep.pk,
            not_qualified.pk,
            "A student project",
        ),
    ]


def test_disqualifying_a_lead_in_qualification_loses_it_there(rep):
    deal = deal_in_stage(rep, Stage.QUALIFICATION, start_days_ago=10)
    at = days_ago(5)

    domain.disqualify(deal, by=rep, at=at)

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.status == Status.LOST
    assert deal.lost_stage == Stage.QUALIFICATION
    assert deal.lost_reason.code == "not_qualified"
    assert deal.lost_at == at
    assert events(deal) == [
        ("created", None, "lead"),
        ("moved", "lead", "qualification"),
        ("lost", "qualification", "qualification"),
    ]


@pytest.mark.parametrize("stage", [Stage.NEEDS, Stage.OFFER])
def test_disqualifying_a_deal_past_qualification_is_refused(rep, stage):
    deal = deal_in_stage(rep, stage)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.disqualify(deal, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["not_qualifying"]
    assert snapshot(deal) == before


def test_disqualifying_a_lost_lead_is_refused(rep):
    deal = make_deal(rep, at=days_ago(10))
    domain.mark_lost(deal, lost_reason("no_response"), by=rep, at=days_ago(9))
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.disqualify(deal, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["closed"]
    assert snapshot(deal) == before


# reopen -------------------------------------------------------------------------------


def test_a_rep_cannot_reopen_a_lost_deal(rep):
    deal = lost_deal(rep, Stage.NEEDS)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.reopen(deal, by=rep, at=days_ago(1))

    assert codes(excinfo) == ["forbidden"]
    assert snapshot(deal) == before
    assert deal.status == Status.LOST


@pytest.mark.parametrize("stage", [Stage.QUALIFICATION, Stage.NEGOTIATION])
def test_a_manager_reopens_a_lost_deal_at_the_stage_it_was_lost_at(rep, manager, stage):
    deal = deal_in_stage(rep, stage)
    reason = lost_reason("timing")
    lost_at = days_ago(20)
    domain.mark_lost(deal, reason, by=rep, at=lost_at, note="Next year")
    stamps = Deal.objects.get(pk=deal.pk).stage_stamps()
    version = deal.version
    at = days_ago(2)

    domain.reopen(deal, by=manager, at=at)

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.status == Status.OPEN
    assert deal.stage == stage
    assert deal.stage_stamps() == stamps
    assert deal.lost_at is None
    assert deal.lost_reason is None
    assert deal.lost_stage is None
    assert deal.lost_note == ""
    assert deal.last_event_at == at
    assert deal.version == version + 1
    assert list(
        deal.history.order_by("id").values_list(
            "event", "from_stage", "to_stage", "at", "by", "lost_reason", "note"
        )
    )[-2:] == [
        ("lost", stage, stage, lost_at, rep.pk, reason.pk, "Next year"),
        ("reopened", stage, stage, at, manager.pk, None, ""),
    ]


def test_an_admin_can_reopen_a_lost_deal(rep, admin):
    deal = lost_deal(rep, Stage.OFFER)

    domain.reopen(deal, by=admin, at=days_ago(1))

    deal.refresh_from_db()
    assert deal.status == Status.OPEN
    assert deal.stage == Stage.OFFER
    assert events(deal)[-2:] == [("lost", "offer", "offer"), ("reopened", "offer", "offer")]


def test_reopening_an_open_deal_is_refused(rep, manager):
    deal = deal_in_stage(rep, Stage.NEEDS)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.reopen(deal, by=manager, at=days_ago(1))

    assert codes(excinfo) == ["not_lost"]
    assert snapshot(deal) == before


def test_reopening_a_won_deal_is_refused(rep, manager):
    deal = won_deal(rep)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.reopen(deal, by=manager, at=days_ago(1))

    assert codes(excinfo) == ["not_lost"]
    assert snapshot(deal) == before
    assert deal.status == Status.WON


def test_reopening_before_the_loss_is_refused(rep, manager):
    deal = lost_deal(rep, Stage.NEEDS, at=days_ago(20))
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.reopen(deal, by=manager, at=days_ago(20) - MINUTE)

    assert codes(excinfo) == ["out_of_order"]
    assert snapshot(deal) == before


def test_a_reopened_deal_moves_forward_again_but_not_before_the_reopening(rep, manager):
    deal = lost_deal(rep, Stage.QUALIFICATION, at=days_ago(20))
    reopened_at = days_ago(10)
    domain.reopen(deal, by=manager, at=reopened_at)
    before = snapshot(deal)

    with pytest.raises(DomainError) as excinfo:
        domain.move_forward(deal, Stage.NEEDS, by=rep, at=reopened_at - MINUTE)
    assert codes(excinfo) == ["out_of_order"]
    assert snapshot(deal) == before

    at = days_ago(9)
    domain.move_forward(deal, Stage.NEEDS, by=rep, at=at)

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.stage == Stage.NEEDS
    assert deal.status == Status.OPEN
    assert deal.entered_needs_at == at
    assert events(deal)[-3:] == [
        ("lost", "qualification", "qualification"),
        ("reopened", "qualification", "qualification"),
        ("moved", "qualification", "needs"),
    ]


# The append-only history ------------------------------------------------------------


def test_a_stage_history_row_cannot_be_changed(rep):
    deal = make_deal(rep, at=days_ago(10))
    row = deal.history.get()
    row.note = "rewritten"

    with pytest.raises(ValueError, match="append-only"):
        row.save()

    assert list(StageHistory.objects.values_list("event", "note")) == [("created", "")]


def test_a_stage_history_row_cannot_be_deleted(rep):
    deal = make_deal(rep, at=days_ago(10))
    row = deal.history.get()

    with pytest.raises(ValueError, match="append-only"):
        row.delete()

    assert StageHistory.objects.filter(pk=row.pk).exists()


def test_a_lead_may_enter_qualification_the_moment_it_was_recorded(rep):
    # Imported history often stamps both with one moment; lead cannot be skipped, so
    # this is a stay of no length, not a skip.
    deal = make_deal(rep, at=days_ago(10))

    domain.move_forward(deal, Stage.QUALIFICATION, by=rep, at=deal.entered_lead_at)

    deal.refresh_from_db()
    assert deal.entered_qualification_at == deal.entered_lead_at
    assert [h.event for h in deal.history.all()] == ["created", "moved"]
