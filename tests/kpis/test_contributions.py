"""A deal's contribution (``compute.contributions``): the day ledger's sums are the
sums of every deal's own, and a few deals' together are the sums of each one's. The
ground for applying a change as its deal's difference (docs/benchmarks.md)."""

from collections import defaultdict

import pytest
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import given

from funnel.models import Deal
from kpis import compute, ledger
from kpis.families import FAMILIES
from kpis.periods import Grain, Period
from kpis.recompute import data_span
from tests.factories import days_ago, make_deal
from tests.kpis.reference import build_dataset, deal_scripts, make_cast, property_settings


def day_sums(measures):
    """{(day, slice, breakdown): {family: {measure: value}}} without empty ones."""
    out = {}
    for key, families in measures.sums.items():
        families = ledger.pruned(families)
        if families:
            out[key] = families
    return out


def added(parts):
    total = defaultdict(dict)
    for part in parts:
        for key, families in part.items():
            ledger._add_into(total[key], families)
    return {key: ledger.pruned(families) for key, families in total.items()}


def gathered():
    first, last = data_span()
    start_at, end_at = Period(Grain.DAY, first).start_at, Period(Grain.DAY, last).end_at
    return day_sums(compute.gather(Grain.DAY, start_at, end_at))


@property_settings()
@given(scripts=deal_scripts(max_size=6))
def test_every_deals_contribution_adds_up_to_the_gathered_day_sums(db, scripts):
    with transaction.atomic():
        build_dataset(scripts, make_cast(), now=timezone.now())
        ids = list(Deal.objects.values_list("pk", flat=True))
        each = [day_sums(compute.contributions([pk])) for pk in ids]

        assert added(each) == gathered()
        assert day_sums(compute.contributions(ids)) == added(each)
        # Read together, deal by deal, each is its own (kpis.changes reads them so).
        together = compute.contributions_by_deal(ids)
        assert {pk: day_sums(together[pk]) if pk in together else {} for pk in ids} == dict(
            zip(ids, each, strict=True)
        )
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_no_deals_contribute_nothing():
    assert compute.contributions([]).sums == {}
    assert compute.contributions_by_deal([]) == {}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_compiled_contribution_queries_outlive_a_reconnection(on_postgres, rep):
    """A worker's connection is closed between tasks: the queries compiled for a deal's
    contribution (``families.Prepared``) are kept for the thread, not compiled again
    for every new connection, and give the same rows on the new one."""
    deal = make_deal(rep, at=days_ago(3))
    first = day_sums(compute.contributions([deal.pk]))
    assert first
    prepared = FAMILIES["lead"].of_deals_prepared()
    connection.close()
    assert day_sums(compute.contributions([deal.pk])) == first
    assert FAMILIES["lead"].of_deals_prepared() is prepared
