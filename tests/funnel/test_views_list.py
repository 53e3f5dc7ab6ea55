"""The deal list: filters, search, sorting and pagination over visible deals only."""

from decimal import Decimal

import pytest

from funnel import domain
from funnel.stages import Stage
from funnel.views import LIST_PAGE_SIZE
from tests.factories import (
    ChannelFactory,
    CompanyFactory,
    ContactFactory,
    days_ago,
    deal_in_stage,
    lost_reason,
    make_deal,
    won_deal,
)

pytestmark = pytest.mark.django_db


def titles(client, query=""):
    response = client.get(f"/deals/list/{query}")
    assert response.status_code == 200
    return [d.title for d in response.context["deals"]]


@pytest.fixture
def deals(rep, teammate, outsider):
    web = ChannelFactory(name="Web")
    fairs = ChannelFactory(name="Fairs")
    make_deal(rep, title="Alpha", at=days_ago(40), channel=web, estimated_value=Decimal(500))
    beta = deal_in_stage(rep, Stage.NEEDS, title="Beta", start_days_ago=30, channel=fairs)
    domain.update_deal(beta, segment="Enterprise", by=rep)
    lost = deal_in_stage(rep, Stage.OFFER, title="Gamma", start_days_ago=20, channel=web)
    domain.mark_lost(lost, lost_reason("price"), by=rep)
    won_deal(rep, title="Delta", start_days_ago=15)
    make_deal(teammate, title="Teammate's", at=days_ago(5))
    make_deal(outsider, title="Outsider's", at=days_ago(5))
    return {"web": web, "fairs": fairs}


def test_a_rep_lists_their_own_deals_newest_first(client, rep, deals):
    client.force_login(rep)
    assert titles(client) == ["Delta", "Gamma", "Beta", "Alpha"]


def test_a_manager_lists_the_team_and_filters_by_owner(client, manager, teammate, deals):
    client.force_login(manager)
    assert titles(client) == ["Teammate's", "Delta", "Gamma", "Beta", "Alpha"]
    assert titles(client, f"?owner={teammate.pk}") == ["Teammate's"]


def test_a_rep_has_no_owner_filter(client, rep, teammate, deals):
    client.force_login(rep)
    response = client.get(f"/deals/list/?owner={teammate.pk}")
    assert "owner" not in response.context["filter"].form.fields
    assert [d.title for d in response.context["deals"]] == ["Delta", "Gamma", "Beta", "Alpha"]


def test_an_owner_from_another_team_is_refused_and_nothing_leaks(client, manager, outsider, deals):
    client.force_login(manager)
    response = client.get(f"/deals/list/?owner={outsider.pk}")
    assert response.context["filter"].form.errors["owner"] == [
        "Select a valid choice. That choice is not one of the available choices."
    ]
    assert "Outsider's" not in response.content.decode()


def test_filters_by_stage_status_channel_and_segment(client, rep, deals):
    client.force_login(rep)
    assert titles(client, "?stage=needs") == ["Beta"]
    assert titles(client, "?status=lost") == ["Gamma"]
    assert titles(client, "?status=won") == ["Delta"]
    assert titles(client, f"?channel={deals['web'].pk}") == ["Gamma", "Alpha"]
    assert titles(client, "?segment=Enterprise") == ["Beta"]
    assert titles(client, f"?channel={deals['web'].pk}&status=open") == ["Alpha"]


def test_filters_by_the_date_the_lead_was_created(client, rep, deals):
    client.force_login(rep)
    since = days_ago(30).date().isoformat()
    until = days_ago(20).date().isoformat()
    assert titles(client, f"?created_from={since}&created_to={until}") == ["Gamma", "Beta"]
    assert titles(client, f"?created_to={until}") == ["Gamma", "Beta", "Alpha"]


def test_searches_title_company_and_contact(client, rep):
    acme = CompanyFactory(name="Acme Widgets")
    make_deal(rep, title="Printers", company=acme)
    other = CompanyFactory(name="Beta Corp")
    make_deal(
        rep,
        title="Servers",
        company=other,
        contact=ContactFactory(company=other, last_name="Wiśniewska"),
    )
    client.force_login(rep)
    assert titles(client, "?q=acme") == ["Printers"]
    assert titles(client, "?q=serv") == ["Servers"]
    assert titles(client, "?q=wiśniewska") == ["Servers"]
    response = client.get("/deals/list/?q=nothing-like-this")
    assert "No deals match these filters." in response.content.decode()


def test_sorts_by_value_and_company(client, rep):
    make_deal(rep, title="Small", estimated_value=Decimal(100), company=CompanyFactory(name="Zeta"))
    make_deal(rep, title="Big", estimated_value=Decimal(9000), company=CompanyFactory(name="Eta"))
    make_deal(rep, title="Mid", estimated_value=Decimal(500), company=CompanyFactory(name="Alfa"))
    client.force_login(rep)
    assert titles(client, "?sort=-value") == ["Big", "Mid", "Small"]
    assert titles(client, "?sort=value") == ["Small", "Mid", "Big"]
    assert titles(client, "?sort=company") == ["Mid", "Big", "Small"]


def test_pages_keep_the_filters(client, rep):
    for i in range(LIST_PAGE_SIZE + 3):
        make_deal(rep, title=f"D{i:02}", at=days_ago(60 - i))
    client.force_login(rep)
    first = client.get("/deals/list/?stage=lead")
    assert len(first.context["deals"]) == 25
    assert first.context["page"].paginator.count == 28
    assert 'href="?stage=lead&amp;page=2"' in first.content.decode()
    assert titles(client, "?stage=lead&page=2") == ["D02", "D01", "D00"]
    assert "28 deals" in first.content.decode()


def test_values_and_dates_follow_the_language(client, rep):
    make_deal(rep, title="X", estimated_value=Decimal("1234567.5"), at=days_ago(3))
    client.force_login(rep)
    english = client.get("/deals/list/").content.decode()
    polish = client.get("/deals/list/", headers={"accept-language": "pl"}).content.decode()
    created = days_ago(3)
    assert "1,234,567.50\xa0PLN" in english
    assert created.strftime("%m/%d/%Y") in english
    assert "1\xa0234\xa0567,50\xa0PLN" in polish
    assert created.strftime("%d-%m-%Y") in polish


def _seed(owner, n):
    channel = ChannelFactory(name="Web")
    for i in range(n):
        make_deal(owner, title=f"D{i}", channel=channel if i % 2 else None, segment=f"S{i % 3}")


@pytest.mark.parametrize("n", [10, 500])
def test_the_list_costs_the_same_queries_for_10_and_500_deals(
    client, manager, rep, n, django_assert_num_queries
):
    _seed(rep, n)
    client.force_login(manager)
    # session, user, segments, owners, count, page rows, channels (filter choices)
    with django_assert_num_queries(7):
        response = client.get("/deals/list/?sort=-value&status=open")
    assert response.context["page"].paginator.count == n
