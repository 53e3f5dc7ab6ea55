"""Query-string filters of the list endpoints (django-filter). Ids of related rows are
plain integers: filtering by another team's id simply matches nothing."""

import django_filters as filters
from django import forms

from funnel.models import (
    Activity,
    ActivityKind,
    Contact,
    Deal,
    MarketingSpend,
    NegotiationRound,
    Offer,
    OfferStatus,
)
from funnel.stages import Stage, Status
from kpis.definitions import KPIS
from kpis.models import KpiSnapshot, Target
from kpis.periods import Grain


class IdFilter(filters.Filter):
    field_class = forms.IntegerField


class DealFilter(filters.FilterSet):
    stage = filters.MultipleChoiceFilter(choices=Stage.choices)
    status = filters.MultipleChoiceFilter(choices=Status.choices)
    owner = IdFilter(field_name="owner_id")
    company = IdFilter(field_name="company_id")
    channel = IdFilter(field_name="channel_id")
    external_id = filters.CharFilter()
    created_after = filters.DateTimeFilter(field_name="entered_lead_at", lookup_expr="gte")
    created_before = filters.DateTimeFilter(field_name="entered_lead_at", lookup_expr="lt")
    expected_close_after = filters.DateFilter(field_name="expected_close_date", lookup_expr="gte")
    expected_close_before = filters.DateFilter(field_name="expected_close_date", lookup_expr="lte")

    class Meta:
        model = Deal
        fields = []


class DealChildFilter(filters.FilterSet):
    deal = IdFilter(field_name="deal_id")


class OfferFilter(DealChildFilter):
    status = filters.ChoiceFilter(choices=OfferStatus.choices)

    class Meta:
        model = Offer
        fields = []


class RoundFilter(DealChildFilter):
    class Meta:
        model = NegotiationRound
        fields = []


class ActivityFilter(DealChildFilter):
    kind = filters.ChoiceFilter(choices=ActivityKind.choices)
    held_after = filters.DateTimeFilter(field_name="held_at", lookup_expr="gte")
    held_before = filters.DateTimeFilter(field_name="held_at", lookup_expr="lt")

    class Meta:
        model = Activity
        fields = []


class ContactFilter(filters.FilterSet):
    company = IdFilter(field_name="company_id")

    class Meta:
        model = Contact
        fields = []


class SpendFilter(filters.FilterSet):
    channel = IdFilter(field_name="channel_id")
    month_after = filters.DateFilter(field_name="month", lookup_expr="gte")
    month_before = filters.DateFilter(field_name="month", lookup_expr="lte")

    class Meta:
        model = MarketingSpend
        fields = []


class TargetFilter(filters.FilterSet):
    grain = filters.ChoiceFilter(choices=Grain.choices)
    team = IdFilter(field_name="team_id")
    rep = IdFilter(field_name="rep_id")
    period_after = filters.DateFilter(field_name="period_start", lookup_expr="gte")
    period_before = filters.DateFilter(field_name="period_start", lookup_expr="lte")

    class Meta:
        model = Target
        fields = []


class KpiSnapshotFilter(filters.FilterSet):
    kpi = filters.MultipleChoiceFilter(choices=[(k.code, k.code) for k in KPIS])
    grain = filters.ChoiceFilter(choices=Grain.choices)
    period_after = filters.DateFilter(
        field_name="period_start", lookup_expr="gte", label="Periods starting on or after"
    )
    period_before = filters.DateFilter(
        field_name="period_start", lookup_expr="lte", label="Periods starting on or before"
    )
    slice = filters.CharFilter(label="Stored slice key: company, team:<id>, rep:<id>, ...")
    breakdown = filters.CharFilter(label="Breakdown key; empty for none")

    class Meta:
        model = KpiSnapshot
        fields = []
