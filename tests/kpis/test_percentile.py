"""Percentiles of durations, in the database on PostgreSQL and in Python on SQLite:
the same interpolation (numpy's default, ``percentile_cont``), the same days."""

from decimal import Decimal

import pytest
from django.db.models import DateTimeField, F, Value

from funnel.models import Deal
from kpis.company import median_days, percentile_days
from tests.factories import days_ago, make_deal


@pytest.fixture
def ages(rep):
    """Five leads created 1 to 5 days before ``anchor``: their ages, exactly."""
    for days in (3, 1, 5, 2, 4):
        make_deal(rep, at=days_ago(days))
    anchor = Value(days_ago(0), output_field=DateTimeField())
    return Deal.objects.all(), anchor - F("entered_lead_at")


def test_percentiles_interpolate_between_closest_ranks(ages):
    deals, age = ages
    assert percentile_days(deals, age, 80) == Decimal("4.2")
    assert percentile_days(deals, age, 0) == Decimal(1)
    assert percentile_days(deals, age, 100) == Decimal(5)
    assert median_days(deals, age) == Decimal(3)
    assert median_days(deals.exclude(entered_lead_at=days_ago(5)), age) == Decimal("2.5")


def test_too_few_rows_give_no_percentile(ages):
    deals, age = ages
    assert percentile_days(deals, age, 80, min_rows=5) == Decimal("4.2")
    assert percentile_days(deals, age, 80, min_rows=6) is None
    assert median_days(deals.none(), age) is None
