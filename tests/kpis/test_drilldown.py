"""The deals behind a number are exactly the deals it counts."""

import pytest

from funnel import domain
from funnel.stages import Stage
from kpis import drilldown, reading, recompute
from kpis.periods import Period, local_date
from tests.factories import days_ago, deal_in_stage, lost_reason, make_deal, won_deal


@pytest.fixture
def dataset(rep, teammate):
    won = won_deal(rep, start_days_ago=20)
    qualified = deal_in_stage(teammate, Stage.NEEDS, start_days_ago=20)
    lead = make_deal(rep, at=days_ago(20))
    lost = deal_in_stage(rep, Stage.OFFER, start_days_ago=20)
    domain.mark_lost(lost, lost_reason("price"), by=rep, at=days_ago(4))
    recompute.recompute_all()
    return {"won": won, "qualified": qualified, "lead": lead, "lost": lost}


def ids(deals):
    return set(deals.queryset().values_list("pk", flat=True))


def test_the_deals_behind_lead_quality_are_its_numerator_and_denominator(dataset):
    period = Period.containing("month", local_date(days_ago(20)))  # all four leads' day
    num, den = drilldown.deals_behind("lead_quality_pct", period)
    assert ids(num) == {dataset["won"].pk, dataset["qualified"].pk, dataset["lost"].pk}
    assert ids(den) == {d.pk for d in dataset.values()}
    value = reading.kpi_values("month", period)["lead_quality_pct"]
    assert (value["numerator"], value["denominator"]) == (len(ids(num)), len(ids(den)))


def test_the_deals_behind_the_win_rate_include_the_lost_opportunities(dataset):
    period = Period.containing("year", local_date(days_ago(3)))
    num, den = drilldown.deals_behind("win_rate_pct", period)
    assert ids(num) == {dataset["won"].pk}
    assert ids(den) == {dataset["won"].pk, dataset["lost"].pk}


def test_the_deals_behind_a_rep_slice_are_that_reps_deals(dataset, rep, teammate):
    period = Period.containing("year", local_date(days_ago(3)))
    _, den = drilldown.deals_behind("lead_quality_pct", period, f"rep:{teammate.pk}")
    assert ids(den) == {dataset["qualified"].pk}
