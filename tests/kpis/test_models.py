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
