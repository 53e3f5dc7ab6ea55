"""``Family.narrow`` only narrows: for a short range, the rows a family finds by index
are exactly the rows its derived moment places in the range."""

import dataclasses
import datetime
from decimal import Decimal

import pytest
from django.db import connection

from funnel import domain
from funnel.models import ActivityKind, Deal
from funnel.stages import Stage
from kpis.families import FAMILIES, NARROW_SPAN
from kpis.periods import Period
from tests.factories import days_ago, deal_in_stage, lost_reason, make_deal, won_deal

NARROWED = sorted(name for name, family in FAMILIES.items() if family.narrow is not None)


@pytest.fixture
def deals(rep):
    """Deals that reach each derived moment by each of its branches: moving on, being
    lost, an offer answered by the client or by the move to negotiation."""
    won_deal(rep, start_days_ago=40)
    lost_at_offer = deal_in_stage(rep, Stage.OFFER, start_days_ago=30)
    offer = domain.start_offer(lost_at_offer, value=Decimal("9000"), by=rep, at=days_ago(26))
    domain.send_offer(offer, by=rep, at=days_ago(25))
    domain.reject_offer(offer, by=rep, at=days_ago(24))
    domain.mark_lost(lost_at_offer, lost_reason("price"), by=rep, at=days_ago(23))
    lost_in_negotiation = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=20)
    domain.mark_lost(lost_in_negotiation, lost_reason("price"), by=rep, at=days_ago(12))
    needs = deal_in_stage(rep, Stage.NEEDS, start_days_ago=15)
    domain.log_activity(needs, kind=ActivityKind.MEETING, held_at=days_ago(10), by=rep)


def rows(family, period):
    return set(family.in_range(period.start_at, period.end_at).values_list("pk", flat=True))


@pytest.mark.parametrize("name", NARROWED)
def test_a_narrowed_family_finds_the_same_rows_in_every_short_range(deals, name):
    family = FAMILIES[name]
    unnarrowed = dataclasses.replace(family, narrow=None)
    found = 0
    for days in range(45, -1, -1):
        for grain in ("day", "week"):
            period = Period.containing(grain, days_ago(days).date())
            assert period.end_at - period.start_at <= NARROW_SPAN
            assert rows(family, period) == rows(unnarrowed, period), (grain, period.start)
        found += len(rows(family, Period.containing("day", days_ago(days).date())))
    # Every narrowed family had rows to find here: the comparison is not of empty sets.
    assert found > 0


class Spy:
    """A narrow condition that records the ranges it was asked to narrow."""

    def __init__(self, narrow):
        self.narrow, self.asked = narrow, []

    def __call__(self, start_at, end_at):
        return self.narrow(start_at, end_at)

    def ids(self, model, start_at, end_at):
        self.asked.append((start_at, end_at))
        return self.narrow.ids(model, start_at, end_at)


@pytest.mark.django_db
def test_only_ranges_up_to_the_narrow_span_are_narrowed():
    spy = Spy(FAMILIES["first_offer"].narrow)
    family = dataclasses.replace(FAMILIES["first_offer"], narrow=spy)
    today = datetime.date(2026, 3, 11)
    for grain, narrowed in (("day", True), ("month", True), ("quarter", False), ("year", False)):
        period = Period.containing(grain, today)
        spy.asked.clear()
        family.in_range(period.start_at, period.end_at)
        assert spy.asked == ([(period.start_at, period.end_at)] if narrowed else []), grain


@pytest.mark.django_db
def test_a_short_range_lists_its_rows_and_a_long_one_keeps_the_condition(deals, monkeypatch):
    """Up to ``NARROW_IDS_MAX`` rows, the family's query gets their ids (and an offer's
    deal ids); above, the narrowing condition itself. Both find the same rows."""
    from kpis import families

    # The day the client rejected the offer (``deals``).
    period = Period.containing("day", days_ago(24).date())
    family = FAMILIES["offer_response"]
    # PostgreSQL takes each list as one array parameter (``families.Among``).
    listing = " = ANY(" if connection.vendor == "postgresql" else " IN ("
    listed = family.in_range(period.start_at, period.end_at)
    assert f'"funnel_offer"."id"{listing}' in str(listed.query)
    assert f'"funnel_offer"."deal_id"{listing}' in str(listed.query)
    monkeypatch.setattr(families, "NARROW_IDS_MAX", 0)
    kept = family.in_range(period.start_at, period.end_at)
    assert f'"funnel_offer"."id"{listing}' not in str(kept.query)
    assert set(listed.values_list("pk", flat=True)) == set(kept.values_list("pk", flat=True))
    assert len(set(kept.values_list("pk", flat=True))) == 1


@pytest.mark.django_db
def test_the_team_column_is_a_case_over_the_owner_or_a_join_with_many_users(
    rep, teammate, manager, monkeypatch
):
    """Both ways read each deal's owner's current team, and nothing for an owner
    outside any team."""
    from kpis import families

    manager.team = None
    manager.save()
    deals = [make_deal(rep), make_deal(teammate), make_deal(manager)]
    expected = [rep.team_id, teammate.team_id, None]
    assert rep.team_id is not None

    def teams():
        qs = Deal.objects.annotate(_t=families.team_of("owner_id"))
        return str(qs.query), [qs.get(pk=d.pk)._t for d in deals]

    sql, got = teams()
    assert "CASE" in sql and "accounts_user" not in sql
    assert got == expected
    monkeypatch.setattr(families, "TEAM_CASE_MAX", 1)
    sql, got = teams()
    assert "CASE" not in sql and "accounts_user" in sql
    assert got == expected
