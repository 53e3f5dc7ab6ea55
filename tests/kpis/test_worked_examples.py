"""The worked examples of domain.md, each with its exact expected value, computed by the
real engine from stored snapshots."""

import datetime
import zoneinfo
from decimal import Decimal

import pytest

from funnel.models import Channel, Company, LostReason, MarketingSpend
from funnel.stages import Stage, Status
from kpis import company, compute, reading
from kpis.models import Forecast, ForecastKind, Target
from kpis.periods import Period
from tests.factories import CompanyFactory, UserFactory
from tests.kpis.builders import deal_row, save_deals, won_row

WARSAW = zoneinfo.ZoneInfo("Europe/Warsaw")
MARCH = Period("month", datetime.date(2025, 3, 1))


def at(y, m, d, h=12):
    return datetime.datetime(y, m, d, h, tzinfo=WARSAW)


def kpis_of(period, slice_key="company"):
    compute.store(period.grain, [period])
    return reading.kpi_values(period.grain, period, slice_key)


@pytest.fixture
def company_x(db):
    return CompanyFactory(name="X")


def test_1000_leads_with_200_entering_needs_give_lead_quality_20_pct(rep, company_x):
    deals = [
        deal_row(
            rep,
            at(2025, 3, 1 + i % 28),
            company=company_x,
            reached=Stage.NEEDS if i < 200 else Stage.LEAD,
        )
        for i in range(1000)
    ]
    save_deals(deals)
    values = kpis_of(MARCH)
    assert values["leads"]["value"] == 1000
    assert values["lead_quality_pct"]["value"] == Decimal(20)
    assert (values["lead_quality_pct"]["numerator"], values["lead_quality_pct"]["denominator"]) == (
        200,
        1000,
    )


def test_every_cohort_kpi_of_leads_shows_how_many_are_still_open(rep, company_x):
    """domain.md: a cohort value "shows how many of the cohort's deals are still open",
    the channel's ROI as much as its lead quality (audit of session 15)."""
    fair = Channel.objects.create(name="Fair")
    MarketingSpend.objects.create(
        channel=fair, month=MARCH.start, amount=1000, currency="PLN", amount_base=1000
    )
    save_deals(
        [
            deal_row(rep, at(2025, 3, 3), company=company_x, channel=fair),
            deal_row(rep, at(2025, 3, 4), company=company_x, channel=fair, reached=Stage.NEEDS),
            won_row(
                rep, at(2025, 3, 5), at(2025, 3, 20), Decimal(3000), company=company_x, channel=fair
            ),
        ]
    )
    values = kpis_of(MARCH, f"channel:{fair.pk}")
    roi = values["channel_roi_pct"]
    assert (roi["value"], roi["numerator"], roi["denominator"]) == (300, 3000, 1000)
    assert roi["extra"] == values["lead_quality_pct"]["extra"] == {"open": 2}


def test_100_opportunities_with_25_won_give_opportunity_conversion_25_pct(rep, company_x):
    deals = []
    for i in range(100):
        lead = at(2025, 2, 10)
        needs = {Stage.NEEDS: at(2025, 3, 2 + i % 20)}
        if i < 25:
            deals.append(
                won_row(rep, lead, at(2025, 5, 1), Decimal(1000), company=company_x, at=needs)
            )
        else:
            deals.append(deal_row(rep, lead, reached=Stage.NEEDS, at=needs, company=company_x))
    save_deals(deals)
    values = kpis_of(MARCH)
    assert values["opportunity_conversion_pct"]["value"] == Decimal(25)
    assert values["qualified_leads"]["value"] == 100


def test_10_deals_won_taking_200_days_give_20_days_to_close(rep, company_x):
    won = at(2025, 3, 15)
    deals = [
        won_row(rep, won - datetime.timedelta(days=days), won, Decimal(100), company=company_x)
        for days in (10, 30, 15, 25, 20, 20, 18, 22, 5, 35)  # 200 days in all
    ]
    save_deals(deals)
    values = kpis_of(MARCH)
    assert values["days_to_close"]["value"] == Decimal(20)
    assert values["days_to_close"]["numerator"] == Decimal(200)
    assert values["days_to_close_median"]["value"] == Decimal(20)


def test_50_deals_won_for_500000_give_average_deal_size_10000(rep, company_x):
    values_ = [Decimal(4000), Decimal(16000)] * 25  # 500,000 in all
    save_deals(
        [won_row(rep, at(2025, 3, 1), at(2025, 3, 20), v, company=company_x) for v in values_]
    )
    values = kpis_of(MARCH)
    assert values["revenue"]["value"] == Decimal(500000)
    assert values["avg_deal_size"]["value"] == Decimal(10000)


def test_revenue_800000_then_1000000_gives_growth_25_pct(rep, company_x):
    save_deals(
        [
            won_row(rep, at(2025, 1, 5), at(2025, 2, 1), Decimal(800000), company=company_x),
            won_row(rep, at(2025, 4, 5), at(2025, 5, 1), Decimal(400000), company=company_x),
            won_row(rep, at(2025, 4, 5), at(2025, 6, 1), Decimal(600000), company=company_x),
        ]
    )
    q2 = Period("quarter", datetime.date(2025, 4, 1))
    values = kpis_of(q2)
    assert values["revenue"]["value"] == Decimal(1000000)
    assert values["revenue_growth_pct"]["value"] == Decimal(25)


def test_zero_previous_revenue_gives_no_growth_value(rep, company_x):
    save_deals([won_row(rep, at(2025, 3, 1), at(2025, 3, 5), Decimal(100), company=company_x)])
    values = kpis_of(MARCH)
    assert values["revenue_growth_pct"]["value"] is None


def test_pipeline_velocity_of_200_opportunities_is_20000_per_day(rep, company_x):
    start = at(2025, 3, 1, 0)
    deals = []
    # 200 opportunities open at the start of March.
    for _ in range(200):
        deals.append(deal_row(rep, at(2025, 1, 10), reached=Stage.NEEDS, company=company_x))
    # Over the 12 months before: 25 won (10,000 each, 25 days from needs), 75 lost.
    for i in range(25):
        won_at = at(2024, 6, 1 + i)
        deals.append(
            won_row(
                rep,
                won_at - datetime.timedelta(days=30),
                won_at,
                Decimal(10000),
                company=company_x,
                at={Stage.NEEDS: won_at - datetime.timedelta(days=25)},
            )
        )
    reason = LostReason.objects.get(code="price")
    for i in range(75):
        deals.append(
            deal_row(
                rep,
                at(2024, 5, 1),
                reached=Stage.OFFER,
                status=Status.LOST,
                lost_at=at(2024, 9, 1 + i % 28),
                lost_reason=reason,
                company=company_x,
            )
        )
    save_deals(deals)
    assert start == MARCH.start_at
    values = kpis_of(MARCH)
    velocity = values["pipeline_velocity"]
    assert velocity["extra"] == {"open": 200}
    assert velocity["value"] == Decimal(20000)


def test_forecast_900000_against_actual_1000000_is_90_pct_accurate_with_minus_10_pct_bias(
    rep, company_x
):
    save_deals([won_row(rep, at(2025, 3, 1), at(2025, 3, 10), Decimal(1000000), company=company_x)])
    Forecast.objects.create(
        grain="month",
        period_start=MARCH.start,
        kind=ForecastKind.COMMITTED,
        amount=Decimal(900000),
        entered_at=at(2025, 2, 20),
    )
    values = kpis_of(MARCH)
    assert values["forecast_accuracy_pct"]["value"] == Decimal(90)
    assert values["forecast_accuracy_pct"]["extra"] == {"bias_pct": -10.0}


def test_a_committed_forecast_entered_after_the_period_began_is_not_used(rep, company_x):
    save_deals([won_row(rep, at(2025, 3, 1), at(2025, 3, 10), Decimal(1000000), company=company_x)])
    Forecast.objects.create(
        grain="month",
        period_start=MARCH.start,
        kind=ForecastKind.COMMITTED,
        amount=Decimal(900000),
        entered_at=at(2025, 3, 2),
    )
    Forecast.objects.create(
        grain="month",
        period_start=MARCH.start,
        kind=ForecastKind.FROZEN,
        amount=Decimal(800000),
        entered_at=at(2025, 3, 1, 0),
    )
    values = kpis_of(MARCH)
    assert values["forecast_accuracy_pct"]["value"] == Decimal(80)


def test_spend_100000_and_50_new_customers_give_cac_2000(rep):
    channel = Channel.objects.create(name="Ads")
    MarketingSpend.objects.create(
        channel=channel, month=MARCH.start, amount=Decimal(100000), amount_base=Decimal(100000)
    )
    save_deals(
        [
            won_row(rep, at(2025, 3, 1), at(2025, 3, 10), Decimal(100), company=CompanyFactory())
            for _ in range(50)
        ]
    )
    values = kpis_of(MARCH)
    assert values["cac"]["value"] == Decimal(2000)
    assert (values["cac"]["numerator"], values["cac"]["denominator"]) == (100000, 50)


def test_5000_per_customer_year_and_3_year_lifetime_give_clv_15000(rep):
    year = Period("year", datetime.date(2025, 1, 1))
    retained = [CompanyFactory() for _ in range(2)]
    churned = CompanyFactory()
    deals = [
        won_row(rep, at(2024, 3, 1), at(2024, 3, 5), Decimal(1), company=c)
        for c in [*retained, churned]
    ]
    deals += [
        won_row(rep, at(2025, 6, 1), at(2025, 6, 5), Decimal(5000), company=c) for c in retained
    ]
    save_deals(deals)
    values = kpis_of(year)
    assert values["clv"]["value"] == Decimal(15000)


def test_500_active_customers_losing_30_give_churn_6_pct_not_net_change(rep):
    deals = []
    companies = Company.objects.bulk_create(Company(name=f"C{i}") for i in range(520))
    for c in companies[:500]:
        deals.append(won_row(rep, at(2024, 11, 1), at(2024, 12, 1), Decimal(10), company=c))
    for c in companies[500:]:
        deals.append(won_row(rep, at(2025, 3, 1), at(2025, 3, 5), Decimal(10), company=c))
    save_deals(deals)
    Company.objects.filter(pk__in=[c.pk for c in companies[:30]]).update(
        churned_at=datetime.date(2025, 3, 15)
    )
    values = kpis_of(MARCH)
    assert values["churn_pct"]["value"] == Decimal(6)
    assert (values["churn_pct"]["numerator"], values["churn_pct"]["denominator"]) == (30, 500)


def test_15_of_20_reps_at_target_give_quota_attainment_75_pct(db, company_x):
    reps = [UserFactory() for _ in range(20)]
    deals = []
    for i, rep in enumerate(reps):
        Target.objects.create(
            grain="month", period_start=MARCH.start, rep=rep, amount=Decimal(1000)
        )
        deals.append(
            won_row(
                rep,
                at(2025, 3, 1),
                at(2025, 3, 5),
                Decimal(1000) if i < 15 else Decimal(999),
                company=company_x,
            )
        )
    save_deals(deals)
    values = kpis_of(MARCH)
    assert values["quota_attainment_pct"]["value"] == Decimal(75)


def test_revenue_1000000_and_20_active_reps_give_productivity_50000(db, company_x):
    reps = [UserFactory() for _ in range(20)]
    deals = [won_row(reps[0], at(2025, 3, 1), at(2025, 3, 5), Decimal(1000000), company=company_x)]
    deals += [deal_row(r, at(2025, 3, 2), company=company_x) for r in reps[1:]]
    save_deals(deals)
    values = kpis_of(MARCH)
    assert values["rep_productivity"]["value"] == Decimal(50000)
    assert values["rep_productivity"]["denominator"] == 20


def test_stage_probability_is_the_share_won_of_every_deal_that_reached_the_stage(rep, company_x):
    """domain.md: "the share of deals that reached a stage in the trailing 12 months and
    were won": the deals still open count, as not won (20 closed: measured)."""
    lost = LostReason.objects.create(code="price_x", name_en="Price", name_pl="Cena")
    deals = [won_row(rep, at(2025, 2, 1), at(2025, 3, 1 + i), Decimal(100)) for i in range(5)]
    deals += [
        deal_row(
            rep,
            at(2025, 2, 1),
            reached=Stage.CLOSING,
            status=Status.LOST,
            lost_at=at(2025, 3, 10 + i),
            lost_reason=lost,
        )
        for i in range(15)
    ]
    deals += [deal_row(rep, at(2025, 2, 1), reached=Stage.CLOSING)]
    save_deals(deals)

    probabilities = company.stage_probabilities(at(2025, 6, 1))

    assert probabilities[Stage.CLOSING] == Decimal(5) / Decimal(21)
    assert probabilities[Stage.LEAD] == Decimal(5) / Decimal(21)
