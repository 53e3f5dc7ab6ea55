"""The cohort maturity horizon is taken once an hour and stored: recomputes store it,
so the first report of the hour reads one row instead of a year of wins."""

import datetime
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.utils import timezone

from kpis import reading, recompute
from kpis.models import MaturityHorizon
from tests.kpis.builders import save_deals, won_row

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 6, 10, 14, 25, tzinfo=datetime.UTC)
HOUR = NOW.replace(minute=0)


def wins(rep, days, hour=HOUR):
    """One win per entry, each ``days`` after its lead, all won within the year before
    ``hour``."""
    save_deals(
        [
            won_row(
                rep,
                hour - datetime.timedelta(days=30 + d),
                hour - datetime.timedelta(days=30),
                Decimal("1000"),
            )
            for d in days
        ]
    )


@pytest.fixture(autouse=True)
def _cold_cache():
    cache.clear()


def test_fewer_than_twenty_wins_mature_after_ninety_days(rep):
    wins(rep, range(1, 20))
    assert reading.maturity_days(NOW) == 90
    assert MaturityHorizon.objects.get().days == 90


def test_the_horizon_is_the_80th_percentile_of_days_to_close_stored_per_hour(rep):
    wins(rep, range(1, 21))  # 1..20 days: rank 0.8 * 19 = 15.2, between 16 and 17
    reading.ensure_maturity(NOW)
    stored = MaturityHorizon.objects.get()
    assert (stored.hour, stored.days) == (HOUR, Decimal("16.2"))
    # More wins within the hour leave it as taken; the next hour takes it again.
    wins(rep, [100] * 20)
    reading.ensure_maturity(NOW + datetime.timedelta(minutes=30))
    assert reading.maturity_days(NOW) == Decimal("16.2")
    assert reading.maturity_days(NOW + datetime.timedelta(hours=1)) == Decimal("100")
    assert list(MaturityHorizon.objects.values_list("hour", flat=True)) == [
        HOUR + datetime.timedelta(hours=1),
        HOUR,
    ]


def test_a_report_after_a_recompute_reads_the_stored_row(rep, django_assert_num_queries):
    wins(rep, range(1, 21))
    recompute.recompute_all_dirty()  # the sweep, every minute
    with django_assert_num_queries(0):  # the cache the recompute filled (a shared one)
        assert reading.maturity_days() == Decimal("16.2")
    cache.clear()  # a process with a cache of its own
    with django_assert_num_queries(1):
        assert reading.maturity_days() == Decimal("16.2")
    with django_assert_num_queries(0):  # then from the cache for the rest of the hour
        reading.maturity_days()


def test_horizons_older_than_two_days_are_deleted(rep):
    reading.ensure_maturity(NOW - datetime.timedelta(days=3))
    reading.ensure_maturity(NOW - datetime.timedelta(days=1))
    reading.ensure_maturity(NOW)
    assert MaturityHorizon.objects.count() == 2


def test_a_full_recompute_takes_the_hours_horizon_again(rep):
    """Wins loaded after the hour's horizon was taken (an import, a restore) move it
    with the next full recompute, as they move the hour's other inputs."""
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    assert reading.maturity_days() == 90
    wins(rep, range(1, 21), hour)
    assert reading.maturity_days() == 90  # taken for the hour

    recompute.recompute_all(grains=["month"])

    assert reading.maturity_days() == Decimal("16.2")
    assert MaturityHorizon.objects.get().days == Decimal("16.2")


def test_a_fanned_out_full_recompute_takes_the_hours_horizon_again(rep):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    assert reading.maturity_days() == 90
    wins(rep, range(1, 21), hour)

    recompute.start_full_recompute(grains=["month"])

    assert reading.maturity_days() == Decimal("16.2")
