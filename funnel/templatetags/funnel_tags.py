"""Display helpers of the rep workspace: money and stages, formatted per locale."""

from django import template
from django.core.exceptions import FieldDoesNotExist
from django.utils.formats import number_format

from funnel.money import base_currency
from funnel.stages import Stage

register = template.Library()

#: Shown for an amount that is not known (never 0: an unknown is not a zero).
NO_VALUE = "—"


@register.filter
def money(value, currency=None):
    """``12500.5`` -> "12,500.50 PLN" in English, "12 500,50 PLN" in Polish."""
    if value is None or value == "":
        return NO_VALUE
    amount = number_format(value, decimal_pos=2, use_l10n=True, force_grouping=True)
    return f"{amount}\N{NO-BREAK SPACE}{currency or base_currency()}"


@register.filter
def percent(value):
    if value is None or value == "":
        return NO_VALUE
    return f"{number_format(value, decimal_pos=2, use_l10n=True)}\N{NO-BREAK SPACE}%"


@register.filter
def stage_label(value):
    """The translated label of a stage code (history rows store codes)."""
    if not value:
        return ""
    return Stage(value).label


@register.filter
def get(mapping, key):
    return mapping.get(key) if mapping else None


def _logged_field(name):
    """The model field a change-log row names (a deal's or its closing document's)."""
    from funnel.models import ClosingDocument, Deal

    for model in (Deal, ClosingDocument):
        try:
            return model._meta.get_field(name)
        except FieldDoesNotExist:
            continue
    return None


@register.filter
def change_field(name):
    """The translated label of a field named in the change log."""
    field = _logged_field(name)
    return field.verbose_name if field is not None else name


@register.filter
def change_value(value, name):
    """A logged value as the user knows it: a choice's translated label ("Contract",
    "Umowa") instead of its stored code; anything else as stored."""
    field = _logged_field(name)
    if value and field is not None and field.choices:
        return dict(field.flatchoices).get(value, value)
    return value
