"""The database refuses invalid rows on its own, even when the domain functions are
bypassed (raw updates, bulk inserts, a future bug): each test writes one invalid row
directly and expects an IntegrityError."""

import datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from funnel import domain
from funnel.models import (
    ClosingDocument,
    Deal,
    ExchangeRate,
    MarketingSpend,
    NegotiationRound,
    Offer,
    SalesCost,
)
from funnel.stages import Stage, Status
from tests.factories import ChannelFactory, days_ago, deal_in_stage, lost_reason

pytestmark = pytest.mark.django_db

HOUR = datetime.timedelta(hours=1)


def refused(write):
    """``write()`` must fail on a database constraint (and roll back only itself)."""
    with pytest.raises(IntegrityError), transaction.atomic():
        write()


def update(obj, **values):
    return lambda: type(obj).objects.filter(pk=obj.pk).update(**values)


@pytest.fixture
def closing_deal(rep):
    """A deal in closing with one offer, one negotiation round and its contract."""
    deal = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=20)
    domain.add_round(deal, held_at=days_ago(14), proposed_value=Decimal("9500"), by=rep)
    domain.agree_terms(deal, agreed_value=Decimal("9000"), discount_pct=10, by=rep, at=days_ago(13))
    domain.move_forward(deal, Stage.CLOSING, by=rep, at=days_ago(12))
    domain.save_closing_document(
        deal,
        document_type="contract",
        issue_date=timezone.localdate() - datetime.timedelta(days=5),
        final_value=Decimal("9000"),
        by=rep,
    )
    deal.refresh_from_db()
    return deal


@pytest.fixture
def spend(db):
    return MarketingSpend.objects.create(
        channel=ChannelFactory(name="Google Ads"),
        month=datetime.date(2025, 3, 1),
        amount=Decimal("1000"),
        amount_base=Decimal("1000"),
    )


@pytest.fixture
def cost(db):
    return SalesCost.objects.create(
        month=datetime.date(2025, 3, 1), amount=Decimal("5000"), amount_base=Decimal("5000")
    )


def test_rows_written_through_the_domain_satisfy_every_constraint(closing_deal, spend, cost):
    # The fixtures exist: the database accepted them. A no-op rewrite keeps them valid.
    deal = Deal.objects.get(pk=closing_deal.pk)
    deal.save()
    assert deal.stage == Stage.CLOSING


# Deals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("discount", [Decimal("150"), Decimal("100.01"), Decimal("-1")])
def test_a_deal_discount_outside_zero_to_one_hundred_is_refused(closing_deal, discount):
    refused(update(closing_deal, discount_pct=discount))


@pytest.mark.parametrize("field", ["estimated_value", "agreed_value"])
def test_a_negative_deal_value_is_refused(closing_deal, field):
    refused(update(closing_deal, **{field: Decimal("-0.01")}))


def test_a_qualification_score_above_one_hundred_is_refused(closing_deal):
    refused(update(closing_deal, qualification_score=101))


def test_a_first_touch_after_the_lead_is_refused(closing_deal):
    refused(update(closing_deal, first_touch_at=closing_deal.entered_lead_at + HOUR))


def test_stage_stamps_out_of_order_are_refused(rep):
    deal = deal_in_stage(rep, Stage.QUALIFICATION)
    refused(update(deal, entered_qualification_at=deal.entered_lead_at - HOUR))


def test_a_later_stage_stamped_before_an_earlier_one_is_refused(closing_deal):
    refused(update(closing_deal, entered_offer_at=closing_deal.entered_needs_at - HOUR))


def test_a_later_stamp_without_the_earlier_one_is_refused(rep):
    deal = deal_in_stage(rep, Stage.NEEDS)
    refused(update(deal, entered_qualification_at=None))


@pytest.mark.parametrize(
    ("stage", "claimed"),
    [
        (Stage.QUALIFICATION, Stage.NEEDS),  # the claimed stage is not stamped
        (Stage.NEEDS, Stage.QUALIFICATION),  # a stage after the claimed one is stamped
        (Stage.LEAD, Stage.CLOSING),
    ],
)
def test_a_stage_that_does_not_match_the_stamps_is_refused(rep, stage, claimed):
    deal = deal_in_stage(rep, stage)
    refused(update(deal, stage=claimed))


def test_an_unknown_stage_or_status_is_refused(closing_deal):
    refused(update(closing_deal, stage="won"))
    refused(update(closing_deal, status="paused"))


def test_a_won_deal_without_won_at_is_refused(closing_deal):
    refused(update(closing_deal, status=Status.WON))


def test_a_won_deal_outside_closing_is_refused(rep):
    deal = deal_in_stage(rep, Stage.NEGOTIATION)
    refused(update(deal, status=Status.WON, won_at=days_ago(1)))


def test_an_open_deal_with_won_at_is_refused(closing_deal):
    refused(update(closing_deal, won_at=days_ago(1)))


def test_a_win_before_entering_closing_is_refused(closing_deal):
    refused(update(closing_deal, status=Status.WON, won_at=closing_deal.entered_closing_at - HOUR))


def test_a_lost_deal_without_a_reason_is_refused(closing_deal):
    refused(update(closing_deal, status=Status.LOST, lost_at=days_ago(1), lost_stage=Stage.CLOSING))


def test_a_lost_deal_without_lost_at_is_refused(closing_deal):
    refused(
        update(
            closing_deal,
            status=Status.LOST,
            lost_reason=lost_reason("price"),
            lost_stage=Stage.CLOSING,
        )
    )


def test_a_lost_deal_whose_lost_stage_is_not_its_stage_is_refused(closing_deal):
    refused(
        update(
            closing_deal,
            status=Status.LOST,
            lost_at=days_ago(1),
            lost_reason=lost_reason("price"),
            lost_stage=Stage.NEGOTIATION,
        )
    )


def test_an_open_deal_with_a_lost_reason_is_refused(closing_deal):
    refused(update(closing_deal, lost_reason=lost_reason("price")))


def test_a_loss_before_the_lead_is_refused(rep):
    deal = deal_in_stage(rep, Stage.LEAD)
    refused(
        update(
            deal,
            status=Status.LOST,
            lost_at=deal.entered_lead_at - HOUR,
            lost_reason=lost_reason("price"),
            lost_stage=Stage.LEAD,
        )
    )


def test_a_last_event_before_the_lead_is_refused(closing_deal):
    refused(update(closing_deal, last_event_at=closing_deal.entered_lead_at - HOUR))


# Offers, rounds, documents -------------------------------------------------------------


def test_an_offer_sent_before_its_preparation_is_refused(closing_deal):
    offer = closing_deal.offers.get()
    refused(update(offer, sent_at=offer.prep_started_at - HOUR))


def test_an_offer_answered_before_it_was_sent_is_refused(closing_deal):
    offer = closing_deal.offers.get()
    refused(update(offer, status="accepted", responded_at=offer.sent_at - HOUR))


def test_a_draft_offer_with_a_sent_date_is_refused(closing_deal):
    offer = closing_deal.offers.get()
    refused(update(offer, status="draft"))


def test_a_duplicate_offer_version_is_refused(closing_deal):
    offer = closing_deal.offers.get()
    refused(
        lambda: Offer.objects.bulk_create(
            [
                Offer(
                    deal=closing_deal,
                    version=offer.version,
                    value=Decimal("1"),
                    value_base=Decimal("1"),
                    prep_started_at=days_ago(1),
                )
            ]
        )
    )


def test_an_offer_version_below_one_is_refused(closing_deal):
    refused(update(closing_deal.offers.get(), version=0))


def test_a_negative_offer_value_is_refused(closing_deal):
    refused(update(closing_deal.offers.get(), value=Decimal("-1")))


@pytest.mark.parametrize("discount", [Decimal("101"), Decimal("-1")])
def test_a_round_discount_outside_zero_to_one_hundred_is_refused(closing_deal, discount):
    refused(update(closing_deal.rounds.get(), discount_pct=discount))


def test_a_negative_round_value_is_refused(closing_deal):
    refused(update(closing_deal.rounds.get(), proposed_value=Decimal("-1")))


def test_a_duplicate_round_number_is_refused(closing_deal):
    first = closing_deal.rounds.get()
    refused(
        lambda: NegotiationRound.objects.bulk_create(
            [
                NegotiationRound(
                    deal=closing_deal,
                    number=first.number,
                    held_at=first.held_at,
                    proposed_value=Decimal("1"),
                    proposed_value_base=Decimal("1"),
                )
            ]
        )
    )


def test_a_negative_final_value_is_refused(closing_deal):
    refused(update(ClosingDocument.objects.get(deal=closing_deal), final_value=Decimal("-1")))


def test_an_unknown_document_type_is_refused(closing_deal):
    refused(update(ClosingDocument.objects.get(deal=closing_deal), document_type="receipt"))


# Spend, costs, rates --------------------------------------------------------------------


def test_marketing_spend_for_a_month_not_starting_on_its_first_day_is_refused(spend):
    refused(
        lambda: MarketingSpend.objects.bulk_create(
            [
                MarketingSpend(
                    channel=spend.channel,
                    month=datetime.date(2025, 4, 15),
                    amount=Decimal("1"),
                    amount_base=Decimal("1"),
                )
            ]
        )
    )


def test_sales_cost_for_a_month_not_starting_on_its_first_day_is_refused(cost):
    refused(update(cost, month=datetime.date(2025, 3, 2)))


def test_two_spend_rows_for_one_channel_and_month_are_refused(spend):
    refused(
        lambda: MarketingSpend.objects.bulk_create(
            [
                MarketingSpend(
                    channel=spend.channel,
                    month=spend.month,
                    amount=Decimal("1"),
                    amount_base=Decimal("1"),
                )
            ]
        )
    )


def test_negative_spend_and_cost_are_refused(spend, cost):
    refused(update(spend, amount=Decimal("-1")))
    refused(update(cost, amount=Decimal("-1")))


def test_a_non_positive_exchange_rate_is_refused(db):
    refused(
        lambda: ExchangeRate.objects.bulk_create(
            [ExchangeRate(currency="EUR", date=datetime.date(2025, 3, 1), rate=Decimal("0"))]
        )
    )
