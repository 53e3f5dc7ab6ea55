"""Money: decimal amounts with a currency, converted into the organisation's base
currency at the rate of the event's date. The converted amount is stored beside the
original so past KPIs never move when rates change (domain.md, "Money")."""

import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.utils import timezone
from django.utils.translation import gettext as _

CENT = Decimal("0.01")

currency_validator = RegexValidator(r"^[A-Z]{3}$", "Use a three-letter ISO 4217 code, e.g. PLN.")


def base_currency() -> str:
    return settings.LEJEK_BASE_CURRENCY


def quantize(amount: Decimal) -> Decimal:
    return Decimal(amount).quantize(CENT, rounding=ROUND_HALF_UP)


def local_date(moment) -> datetime.date:
    """The organisation-time-zone date of a datetime (a date passes through)."""
    if isinstance(moment, datetime.datetime):
        return timezone.localtime(moment).date()
    return moment


def rate_on(currency: str, on) -> Decimal:
    """Base-currency units per one unit of ``currency`` on the date of ``on``: the
    latest rate recorded on or before that date."""
    if currency == base_currency():
        return Decimal(1)
    from funnel.models import ExchangeRate

    day = local_date(on)
    rate = (
        ExchangeRate.objects.filter(currency=currency, date__lte=day)
        .order_by("-date")
        .values_list("rate", flat=True)
        .first()
    )
    if rate is None:
        raise ValidationError(
            _("No exchange rate for %(currency)s on or before %(date)s.")
            % {"currency": currency, "date": day.isoformat()},
            code="no_rate",
        )
    return rate


def to_base(amount, currency: str, on) -> Decimal | None:
    if amount is None:
        return None
    return quantize(Decimal(amount) * rate_on(currency, on))
