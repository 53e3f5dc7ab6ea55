"""Inputs of KPIs that are not deals: spend, sales cost, targets, forecasts, stage
settings, a company's churn date and a rep's team. Saving or deleting one marks the
days it affects dirty, whatever saved it (admin, import, API)."""

import calendar
import datetime

from django.db.models import Min
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from accounts.models import Team, User
from funnel.models import Activity, Company, Deal, MarketingSpend, Offer, SalesCost
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


def _stored(instance, field, raw, update_fields):
    """``field``'s stored value before a save (None for a new row or a fixture load):
    the current one, without a query, when the save writes other fields only (a
    login saves ``last_login`` alone)."""
    attname = instance._meta.get_field(field).attname
    if update_fields is not None and not {field, attname} & set(update_fields):
        return getattr(instance, attname)
    if raw or instance.pk is None:
        return None
    return type(instance).objects.filter(pk=instance.pk).values_list(attname, flat=True).first()


def _company_saving(sender, instance, raw=False, update_fields=None, **kwargs):
    instance._churned_before = _stored(instance, "churned_at", raw, update_fields)


def _company_saved(sender, instance, raw=False, **kwargs):
    """A churn date set, moved or cleared: the active customers (churn, CLV, repeat
    customers) of every day from the earlier of the two dates to today."""
    before = getattr(instance, "_churned_before", None)
    if raw or before == instance.churned_at:
        return
    mark_days(days_since(min(d for d in (before, instance.churned_at) if d is not None)))


def _earliest_of_owners(owners):
    """The earliest moment any KPI reads from the deals of ``owners`` (user ids)."""
    moments = [
        Deal.objects.filter(owner__in=owners).aggregate(m=Min("entered_lead_at"))["m"],
        Offer.objects.filter(deal__owner__in=owners).aggregate(m=Min("prep_started_at"))["m"],
        Activity.objects.filter(deal__owner__in=owners).aggregate(m=Min("held_at"))["m"],
    ]
    moments = [m for m in moments if m is not None]
    return min(moments) if moments else None


def _mark_owners(owners):
    """A team slice is its members' deals, by the owner's current team: a rep who
    moves takes every day of their deals to the new team's rows."""
    earliest = _earliest_of_owners(owners)
    if earliest is not None:
        mark_days(days_since(earliest))


def _user_saving(sender, instance, raw=False, update_fields=None, **kwargs):
    instance._team_before = _stored(instance, "team", raw, update_fields)


def _user_saved(sender, instance, raw=False, created=False, **kwargs):
    """A rep moved to another team (or out of one): the days of their deals."""
    if raw or created or getattr(instance, "_team_before", None) == instance.team_id:
        return
    _mark_owners([instance.pk])


def _team_deleting(sender, instance, **kwargs):
    """Deleting a team leaves its members without one (``SET_NULL``, no save)."""
    members = list(instance.members.values_list("pk", flat=True))
    if members:
        _mark_owners(members)


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
    pre_save.connect(_user_saving, sender=User, dispatch_uid="kpis-user-saving")
    post_save.connect(_user_saved, sender=User, dispatch_uid="kpis-user-saved")
    pre_delete.connect(_team_deleting, sender=Team, dispatch_uid="kpis-team-deleting")
