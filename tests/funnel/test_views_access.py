"""Another rep's deal is a 404 on every URL of the workspace, and nothing changes."""

import pytest
from django.urls import get_resolver, reverse

from funnel import domain
from funnel.models import Deal, Offer
from funnel.stages import Stage
from tests.factories import deal_in_stage

pytestmark = pytest.mark.django_db


def deal_routes():
    """Every named route of the funnel app that takes a deal id."""
    resolver = get_resolver().namespace_dict["funnel"][1]
    return sorted(p.name for p in resolver.url_patterns if "pk" in p.pattern.converters)


def sample_kwargs(name, deal, offer):
    # A new route without a sample here fails the sweep below instead of going unchecked.
    offer_routes = {"offer_send", "offer_accept", "offer_reject"}
    if name in offer_routes:
        return {"pk": deal.pk, "offer_pk": offer.pk}
    known = {
        "detail",
        "details",
        "qualification",
        "needs",
        "activity",
        "move",
        "offer",
        "terms",
        "round",
        "closing",
        "lost",
        "disqualify",
        "reopen",
    }
    if name in known:
        return {"pk": deal.pk}
    raise AssertionError(f"No sample arguments for the route {name!r}: add them here")


@pytest.fixture
def victim(rep):
    deal = deal_in_stage(rep, Stage.OFFER, title="Rep's secret")
    offer = domain.start_offer(deal, value=100, by=rep)
    return deal, offer


def test_the_sweep_covers_every_deal_route(victim):
    deal, offer = victim
    names = deal_routes()
    assert len(names) == 16
    for name in names:
        assert sample_kwargs(name, deal, offer)


@pytest.mark.parametrize("intruder", ["outsider", "teammate", "other_manager"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_another_reps_deal_is_a_404_on_every_url(client, request, victim, intruder, method):
    deal, offer = victim
    client.force_login(request.getfixturevalue(intruder))
    before = Deal.objects.values().get(pk=deal.pk)
    for name in deal_routes():
        url = reverse(f"funnel:{name}", kwargs=sample_kwargs(name, deal, offer))
        body = {"version": deal.version, "to_stage": "negotiation", "value": "1", "confirm": "1"}
        response = getattr(client, method)(url, body if method == "post" else None)
        assert response.status_code == 404, (name, response.status_code)
        assert b"Rep&#x27;s secret" not in response.content
    assert Deal.objects.values().get(pk=deal.pk) == before
    assert list(Offer.objects.values_list("version", "status")) == [(1, "draft")]


def test_the_owner_teammates_manager_and_admin_open_the_deal(client, victim, rep, manager, admin):
    deal, _ = victim
    for user in (rep, manager, admin):
        client.force_login(user)
        assert client.get(f"/deals/{deal.pk}/").status_code == 200


def test_anonymous_visitors_are_sent_to_sign_in_on_every_url(client, victim):
    deal, offer = victim
    for name in deal_routes():
        url = reverse(f"funnel:{name}", kwargs=sample_kwargs(name, deal, offer))
        response = client.post(url)
        assert (response.status_code, response["Location"]) == (302, f"/accounts/login/?next={url}")
