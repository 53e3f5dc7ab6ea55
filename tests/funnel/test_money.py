"""Money in the base currency: converted at the rate of the event's date in the
organisation's time zone, and stored so past values never move (domain.md, "Money")."""

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from funnel import domain
from funnel.models import Deal, ExchangeRate
from funnel.money import base_currency, local_date, quantize, rate_on, to_base
from tests.factories import CompanyFactory, days_ago

pytestmark = pytest.mark.django_db

UTC = datetime.UTC

#: 23:30 UTC on 31 March 2025 is 01:30 on 1 April in Warsaw (summer time, UTC+2).
MARCH_31_LATE_UTC = datetime.datetime(2025, 3, 31, 23, 30, tzinfo=UTC)


@pytest.fixture
def eur_rates(db):
    for day, rate in [
        (datetime.date(2025, 3, 1), Decimal("4.20")),
        (datetime.date(2025, 4, 1), Decimal("4.30")),
        (datetime.date(2025, 4, 10), Decimal("4.35")),
    ]:
        ExchangeRate.objects.create(currency="EUR", date=day, rate=rate)


def test_the_base_currency_is_pln_by_default():
    assert base_currency() == "PLN"


def test_an_amount_in_the_base_currency_is_kept_as_it_is(db):
    assert to_base(Decimal("1234.5"), "PLN", MARCH_31_LATE_UTC) == Decimal("1234.50")
    assert rate_on("PLN", MARCH_31_LATE_UTC) == Decimal(1)


def test_no_amount_converts_to_no_amount(db):
    assert to_base(None, "EUR", MARCH_31_LATE_UTC) is None


def test_a_late_evening_in_utc_is_the_next_day_in_warsaw(eur_rates):
    assert local_date(MARCH_31_LATE_UTC) == datetime.date(2025, 4, 1)

    assert rate_on("EUR", MARCH_31_LATE_UTC) == Decimal("4.30")
    assert to_base(Decimal("100"), "EUR", MARCH_31_LATE_UTC) == Decimal("430.00")


def test_the_same_evening_two_hours_earlier_is_still_march_in_warsaw(eur_rates):
    moment = datetime.datetime(2025, 3, 31, 21, 30, tzinfo=UTC)  # 23:30 in Warsaw

    assert local_date(moment) == datetime.date(2025, 3, 31)
    assert to_base(Decimal("100"), "EUR", moment) == Decimal("420.00")


def test_a_winter_midnight_in_warsaw_is_one_hour_after_utc(db):
    ExchangeRate.objects.create(currency="EUR", date=datetime.date(2025, 1, 1), rate=Decimal("4"))
    ExchangeRate.objects.create(currency="EUR", date=datetime.date(2025, 2, 1), rate=Decimal("5"))

    # 23:30 UTC on 31 January is 00:30 on 1 February in Warsaw (UTC+1).
    moment = datetime.datetime(2025, 1, 31, 23, 30, tzinfo=UTC)

    assert to_base(Decimal("10"), "EUR", moment) == Decimal("50.00")
    assert to_base(Decimal("10"), "EUR", moment - datetime.timedelta(hours=1)) == Decimal("40.00")


def test_the_organisations_time_zone_decides_the_date(eur_rates, settings):
    settings.TIME_ZONE = "UTC"

    assert local_date(MARCH_31_LATE_UTC) == datetime.date(2025, 3, 31)
    assert to_base(Decimal("100"), "EUR", MARCH_31_LATE_UTC) == Decimal("420.00")


def test_the_latest_rate_on_or_before_the_day_is_used(eur_rates):
    assert rate_on("EUR", datetime.date(2025, 4, 1)) == Decimal("4.30")  # on the day
    assert rate_on("EUR", datetime.date(2025, 4, 9)) == Decimal("4.30")  # the day before next
    assert rate_on("EUR", datetime.date(2025, 4, 10)) == Decimal("4.35")
    assert rate_on("EUR", datetime.date(2026, 1, 1)) == Decimal("4.35")


def test_an_amount_before_the_first_rate_cannot_be_converted(eur_rates):
    with pytest.raises(ValidationError, match="No exchange rate for EUR on or before 2025-02-28"):
        to_base(Decimal("100"), "EUR", datetime.date(2025, 2, 28))


def test_a_currency_without_rates_cannot_be_converted(eur_rates):
    with pytest.raises(ValidationError) as excinfo:
        to_base(Decimal("100"), "USD", datetime.date(2025, 4, 1))

    assert excinfo.value.code == "no_rate"


def test_converted_amounts_are_rounded_half_up_to_the_cent(db):
    ExchangeRate.objects.create(
        currency="EUR", date=datetime.date(2025, 3, 1), rate=Decimal("1.005")
    )

    assert to_base(Decimal("1"), "EUR", datetime.date(2025, 3, 2)) == Decimal("1.01")
    assert quantize(Decimal("2.675")) == Decimal("2.68")
    assert quantize(Decimal("-2.675")) == Decimal("-2.68")


def test_a_stored_base_amount_does_not_move_when_the_rate_changes_later(rep):
    at = days_ago(10)
    rate = ExchangeRate.objects.create(currency="EUR", date=local_date(at), rate=Decimal("4.00"))
    deal = domain.create_deal(
        by=rep,
        owner=rep,
        company=CompanyFactory(),
        title="Export",
        currency="EUR",
        estimated_value=Decimal("1000"),
        at=at,
    )

    rate.rate = Decimal("5.00")
    rate.save()
    ExchangeRate.objects.create(currency="EUR", date=local_date(days_ago(1)), rate=Decimal("6"))

    deal = Deal.objects.get(pk=deal.pk)
    assert deal.estimated_value_base == Decimal("4000.00")
    assert deal.current_value_base == Decimal("4000.00")
