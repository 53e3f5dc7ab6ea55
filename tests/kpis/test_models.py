import datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from kpis.models import Target


def test_the_company_has_one_target_per_period(db):
    Target.objects.create(grain="month", period_start=datetime.date(2025, 3, 1), amount=Decimal(1))
    with pytest.raises(IntegrityError), transaction.atomic():
        Target.objects.create(
            grain="month", period_start=datetime.date(2025, 3, 1), amount=Decimal(2)
        )


def test_a_rep_and_the_company_each_have_their_own_target(rep):
    Target.objects.create(grain="month", period_start=datetime.date(2025, 3, 1), amount=Decimal(1))
    Target.objects.create(
        grain="month", period_start=datetime.date(2025, 3, 1), rep=rep, amount=Decimal(2)
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        Target.objects.create(
            grain="month", period_start=datetime.date(2025, 3, 1), rep=rep, amount=Decimal(3)
        )
    assert Target.objects.count() == 2


def test_freezing_stores_the_weighted_pipeline_of_the_current_periods_once(rep):
    from funnel import domain
    from funnel.stages import Stage
    from kpis.forecasts import freeze_forecasts
    from kpis.models import Forecast, StageSetting
    from kpis.periods import Period, today
    from tests.factories import deal_in_stage

    StageSetting.objects.filter(stage=Stage.NEGOTIATION).update(default_probability_pct=50)
    deal = deal_in_stage(rep, Stage.NEGOTIATION, value=Decimal(10000))
    domain.update_deal(deal, by=rep, expected_close_date=today())
    assert freeze_forecasts() == 8  # 4 grains × (company + team A)
    month = Forecast.objects.get(
        grain="month", period_start=Period.containing("month", today()).start, team=None
    )
    assert month.kind == "frozen"
    assert month.amount == Decimal(5000)
    assert freeze_forecasts() == 0
