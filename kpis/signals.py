"""Inputs of KPIs that are not deals: spend, sales cost, targets, forecasts, stage
settings and a company's churn date. Saving or deleting one marks the days it affects
dirty, whatever saved it (admin, import, API)."""

import calendar
import datetime

from django.db.models.signals import post_delete, post_save, pre_save

from funnel.models import Company, MarketingSpend, SalesCost
from kpis.dirty import days_since, mark_days
from kpis.models import Forecast, StageSetting, Target
from kpis.periods import Period, today


def _month_days(month):
    days = calendar.monthrange(month.year, month.month)[1]
    return [month.replace(day=1) + datetime.timedelta(days=i) for i in range(days)]


def _spend_changed(sender, instance, **kwargs):
    mark_days(_month_days(instance.month))


def _period_changed(sender, instance, **kwargs):
    period = Period(instance.grain, instance.period_start)
    mark_days([period.start, period.end - datetime.timedelta(days=1)])


def _stage_setting_changed(sender, instance, **kwargs):
    mark_days([today()])


def _company_saving(sender, instance, raw=False, **kwargs):
    instance._churned_before = (
        None
        if raw or instance.pk is None
        else Company.objects.filter(pk=instance.pk).values_list("churned_at", flat=True).first()
    )


def _company_saved(sender, instance, raw=False, **kwargs):
    """A churn date set, moved or cleared: the active customers (churn, CLV, repeat
    customers) of every day from the earlier of the two dates to today."""
    before = getattr(instance, "_churned_before", None)
    if raw or before == instance.churned_at:
        return
    mark_days(days_since(min(d for d in (before, instance.churned_at) if d is not None)))


def connect():
    for model in (MarketingSpend, SalesCost):
        post_save.connect(_spend_changed, sender=model, dispatch_uid=f"kpis-{model.__name__}-save")
        post_delete.connect(
            _spend_changed, sender=model, dispatch_uid=f"kpis-{model.__name__}-delete"
        )
    for model in (Target, Forecast):
        post_save.connect(_period_changed, sender=model, dispatch_uid=f"kpis-{model.__name__}-save")
        post_delete.connect(
            _period_changed, sender=model, dispatch_uid=f"kpis-{model.__name__}-delete"
        )
    post_save.connect(
        _stage_setting_changed, sender=StageSetting, dispatch_uid="kpis-stage-setting"
    )
    pre_save.connect(_company_saving, sender=Company, dispatch_uid="kpis-company-saving")
    post_save.connect(_company_saved, sender=Company, dispatch_uid="kpis-company-saved")
