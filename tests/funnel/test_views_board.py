"""The board: one column per stage of the user's open deals, stalled deals marked."""

import datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.utils import timezone

from funnel import domain
from funnel.stages import Stage
from funnel.views import BOARD_CARDS_PER_STAGE, StallLimits, _decorate
from kpis.models import KpiSnapshot, StageSetting
from tests.factories import (
    CompanyFactory,
    days_ago,
    deal_in_stage,
    lost_reason,
    make_deal,
    won_deal,
)

pytestmark = pytest.mark.django_db


def cards(response):
    return {
        column["stage"].value: [d.title for d in column["deals"]]
        for column in response.context["columns"]
    }


def median_snapshot(stage, slice_key, days, year=None):
    year = year or timezone.localdate().year
    return KpiSnapshot.objects.create(
        kpi=f"time_in_{stage}_days_median",
        grain="year",
        period_start=datetime.date(year, 1, 1),
        slice=slice_key,
        value=Decimal(days),
    )


def test_anonymous_visitors_are_sent_to_sign_in(client):
    response = client.get("/deals/")
    assert (response.status_code, response["Location"]) == (302, "/accounts/login/?next=/deals/")


def test_the_home_page_is_the_board(client, rep):
    deal_in_stage(rep, Stage.NEEDS, title="Home deal")
    client.force_login(rep)
    response = client.get("/")
    assert response.templates[0].name == "funnel/board.html"
    assert cards(response)["needs"] == ["Home deal"]


def test_a_rep_sees_only_their_own_open_deals_one_column_per_stage(client, rep, teammate):
    deal_in_stage(rep, Stage.LEAD, title="Mine lead")
    deal_in_stage(rep, Stage.OFFER, title="Mine offer")
    deal_in_stage(teammate, Stage.OFFER, title="Teammate's")
    won_deal(rep, title="Mine won")
    lost = deal_in_stage(rep, Stage.NEEDS, title="Mine lost")
    domain.mark_lost(lost, lost_reason("price"), by=rep)
    client.force_login(rep)
    response = client.get("/deals/")
    assert cards(response) == {
        "lead": ["Mine lead"],
        "qualification": [],
        "needs": [],
        "offer": ["Mine offer"],
        "negotiation": [],
        "closing": [],
    }
    assert [c["count"] for c in response.context["columns"]] == [1, 0, 0, 1, 0, 0]
    assert "Teammate" not in response.content.decode()


def test_a_card_shows_company_value_owner_and_days_in_stage(client, rep):
    company = CompanyFactory(name="Kowalski i Synowie")
    deal = make_deal(rep, company=company, estimated_value=Decimal("12500.50"), at=days_ago(9))
    domain.move_forward(deal, Stage.QUALIFICATION, by=rep, at=days_ago(7))
    client.force_login(rep)
    response = client.get("/deals/")
    html = response.content.decode()
    card = html[html.index(f'data-deal="{deal.pk}"') :]
    card = card[: card.index("</article>")]
    assert "Kowalski i Synowie" in card
    assert "12,500.50\xa0PLN" in card
    assert str(rep) in card
    assert "7 days in stage" in card
    assert "is-stalled" not in html  # no limit and no measured stay: nothing stalls


@pytest.mark.parametrize(
    ("entered", "now", "days"),
    [
        ((2026, 3, 9, 23, 30), (2026, 3, 10, 8, 0), 1),  # yesterday evening: one day
        ((2026, 3, 10, 0, 30), (2026, 3, 10, 23, 0), 0),  # today, a UTC day earlier
        ((2026, 3, 3, 12, 0), (2026, 3, 10, 9, 0), 7),  # a week ago, hour not yet come
    ],
)
def test_days_in_stage_and_idle_are_calendar_days_of_the_organisation(entered, now, days):
    local = timezone.get_current_timezone()
    entered = datetime.datetime(*entered, tzinfo=local)
    deal = SimpleNamespace(
        stage_entered_at=entered, stage_changed_at=entered, last_activity_at=None, is_open=True
    )
    _decorate([deal], datetime.datetime(*now, tzinfo=local))
    assert (deal.days_in_stage, deal.days_idle, deal.is_stalled) == (days, days, False)


def test_a_manager_sees_the_team_and_can_narrow_to_one_rep(
    client, manager, rep, teammate, outsider
):
    deal_in_stage(rep, Stage.NEEDS, title="Rep's")
    deal_in_stage(teammate, Stage.NEEDS, title="Teammate's")
    deal_in_stage(outsider, Stage.NEEDS, title="Outsider's")
    client.force_login(manager)
    assert sorted(cards(client.get("/deals/"))["needs"]) == ["Rep's", "Teammate's"]
    assert cards(client.get(f"/deals/?owner={teammate.pk}"))["needs"] == ["Teammate's"]
    # Another team's rep is not among the choices: the filter is ignored.
    assert sorted(cards(client.get(f"/deals/?owner={outsider.pk}"))["needs"]) == [
        "Rep's",
        "Teammate's",
    ]


def test_a_column_shows_the_longest_waiting_deals_and_links_to_the_rest(client, rep):
    for i in range(BOARD_CARDS_PER_STAGE + 2):
        make_deal(rep, title=f"Lead {i:02}", at=days_ago(60 - i))
    client.force_login(rep)
    response = client.get("/deals/")
    lead = response.context["columns"][0]
    assert [d.title for d in lead["deals"]] == [f"Lead {i:02}" for i in range(30)]
    assert (lead["count"], lead["hidden"]) == (32, 2)
    assert "/deals/list/?stage=lead&amp;status=open" in response.content.decode()


def test_a_deal_idle_longer_than_the_admins_stage_limit_is_stalled(client, rep):
    StageSetting.objects.filter(stage="needs").update(stall_limit_days=10)
    old = deal_in_stage(rep, Stage.NEEDS, start_days_ago=30)  # in needs for 28 days
    fresh = deal_in_stage(rep, Stage.NEEDS, start_days_ago=8)  # in needs for 6 days
    client.force_login(rep)
    response = client.get("/deals/")
    stalled = {d.pk: d.is_stalled for d in response.context["columns"][2]["deals"]}
    assert stalled == {old.pk: True, fresh.pk: False}


def test_a_recent_activity_keeps_a_deal_from_stalling(client, rep):
    StageSetting.objects.filter(stage="needs").update(stall_limit_days=10)
    deal = deal_in_stage(rep, Stage.NEEDS, start_days_ago=30)
    domain.log_activity(deal, kind="call", held_at=days_ago(2), by=rep)
    client.force_login(rep)
    response = client.get("/deals/")
    assert [d.is_stalled for d in response.context["columns"][2]["deals"]] == [False]


def test_without_an_admin_limit_twice_the_teams_median_stay_applies(rep, team_a):
    median_snapshot("needs", f"team:{team_a.pk}", "4.5")
    median_snapshot("needs", "company", "20")
    median_snapshot("offer", "company", "6")
    limits = StallLimits()
    assert limits.days("needs", team_a.pk) == Decimal("9.0")
    assert limits.days("offer", team_a.pk) == Decimal("12")  # no team value: company's
    assert limits.days("lead", team_a.pk) is None  # nothing measured: never stalled


def test_the_latest_years_median_is_used(rep, team_a):
    this_year = timezone.localdate().year
    median_snapshot("needs", f"team:{team_a.pk}", "30", year=this_year - 1)
    assert StallLimits().days("needs", team_a.pk) == Decimal("60")
    median_snapshot("needs", f"team:{team_a.pk}", "5", year=this_year)
    assert StallLimits().days("needs", team_a.pk) == Decimal("10")


def test_the_board_marks_a_deal_beyond_its_teams_usual_time(client, rep, team_a):
    median_snapshot("needs", f"team:{team_a.pk}", "5")
    slow = deal_in_stage(rep, Stage.NEEDS, start_days_ago=15)  # 13 days in needs, limit 10
    deal_in_stage(rep, Stage.NEEDS, start_days_ago=6)  # 4 days
    client.force_login(rep)
    html = client.get("/deals/").content.decode()
    assert html.count("is-stalled") == 1
    card = html[html.index(f'data-deal="{slow.pk}"') - 60 :]
    assert 'class="card deal-card is-stalled"' in card[:120]
    assert "Stalled: no change for 13 days" in card


def _seed(owner, n):
    stages = [Stage.LEAD, Stage.QUALIFICATION, Stage.NEEDS]
    for i in range(n):
        deal = make_deal(owner, title=f"D{i}", at=days_ago(40))
        target = stages[i % 3]
        if target != Stage.LEAD:
            domain.move_forward(deal, target, by=owner, at=days_ago(30))
        if i % 7 == 0:
            domain.log_activity(deal, kind="call", held_at=days_ago(5), by=owner)


@pytest.mark.parametrize("n", [10, 500])
def test_the_board_costs_the_same_queries_for_10_and_500_deals(
    client, rep, team_a, n, django_assert_num_queries
):
    _seed(rep, n)
    median_snapshot("needs", f"team:{team_a.pk}", "5")
    client.force_login(rep)
    # session, user, per-stage totals, stage settings, median snapshots, cards
    with django_assert_num_queries(6):
        response = client.get("/deals/")
    assert sum(c["count"] for c in response.context["columns"]) == n


@pytest.mark.parametrize("n", [10, 500])
def test_a_managers_board_costs_the_same_queries_for_10_and_500_deals(
    client, manager, rep, n, django_assert_num_queries
):
    _seed(rep, n)
    client.force_login(manager)
    # ... and the owners the manager may choose from
    with django_assert_num_queries(7):
        response = client.get("/deals/")
    assert sum(c["count"] for c in response.context["columns"]) == n
