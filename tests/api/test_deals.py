"""Deals through the API: access like the web (another rep's deal is a 404), every
change through the domain functions, field errors and domain refusals as 400, a stale
version as 409 (412 with If-Match), and a list that costs the same queries for 5 deals
as for 50."""

import datetime
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from funnel import domain
from funnel.models import Deal, DealChange, StageHistory
from funnel.stages import Stage, Status
from tests.factories import CompanyFactory, deal_in_stage, make_deal

pytestmark = pytest.mark.django_db


def url(name, **kwargs):
    return reverse(f"api:{name}", kwargs=kwargs)


def detail(deal, action=None):
    name = f"deal-{action}" if action else "deal-detail"
    return url(name, pk=deal.pk)


def test_anonymous_request_is_refused_with_401(api, rep):
    make_deal(rep)
    response = api.get(url("deal-list"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_session_sign_in_also_works(api, rep):
    deal = make_deal(rep, title="Mine")
    api.force_login(rep)
    response = api.get(url("deal-list"))
    assert response.status_code == 200
    assert [d["id"] for d in response.json()["results"]] == [deal.pk]


def test_token_is_obtained_with_username_and_password(api, rep):
    from tests.factories import PASSWORD

    response = api.post(url("token"), {"username": "rep", "password": PASSWORD})
    assert response.status_code == 200
    token = response.json()["token"]
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get(url("deal-list")).status_code == 200
    wrong = api.post(url("token"), {"username": "rep", "password": "nope"})
    assert wrong.status_code == 400


def test_each_role_lists_exactly_the_deals_it_may_see(api, rep, teammate, manager, outsider, admin):
    mine = make_deal(rep, title="rep's")
    theirs = make_deal(teammate, title="teammate's")
    other = make_deal(outsider, title="outsider's")

    def ids(user):
        return sorted(d["id"] for d in api.as_user(user).get(url("deal-list")).json()["results"])

    assert ids(rep) == [mine.pk]
    assert ids(teammate) == [theirs.pk]
    assert ids(manager) == sorted([mine.pk, theirs.pk])
    assert ids(outsider) == [other.pk]
    assert ids(admin) == sorted([mine.pk, theirs.pk, other.pk])


@pytest.mark.parametrize("action", [None, "history"])
def test_another_reps_deal_is_404(api, rep, outsider, action):
    deal = make_deal(outsider)
    assert api.as_user(rep).get(detail(deal, action)).status_code == 404


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("move", {"stage": "qualification"}),
        ("lose", {"lost_reason": "price"}),
        ("disqualify", {}),
        ("win", {}),
        ("agree-terms", {"agreed_value": "100.00"}),
        (
            "closing-document",
            {"document_type": "contract", "issue_date": "2025-01-01", "final_value": "1"},
        ),
    ],
)
def test_an_outsider_cannot_change_a_deal_and_learns_nothing(api, rep, outsider, action, body):
    deal = make_deal(rep)
    response = api.as_user(outsider).post(detail(deal, action), {**body, "version": deal.version})
    assert response.status_code == 404
    deal.refresh_from_db()
    assert (deal.stage, deal.status, deal.version) == (Stage.LEAD, Status.OPEN, 1)
    assert StageHistory.objects.filter(deal=deal).count() == 1


def test_an_outsider_cannot_edit_a_deal(api, rep, outsider):
    deal = make_deal(rep, title="Original")
    response = api.as_user(outsider).patch(detail(deal), {"title": "Hacked", "version": 1})
    assert response.status_code == 404
    deal.refresh_from_db()
    assert deal.title == "Original"


def test_retrieve_gives_the_version_as_etag(api, rep):
    deal = make_deal(rep, title="Mine")
    response = api.as_user(rep).get(detail(deal))
    assert response.status_code == 200
    assert response["ETag"] == '"1"'
    body = response.json()
    assert body["title"] == "Mine"
    assert body["version"] == 1
    assert body["stage"] == "lead"
    assert body["owner_username"] == "rep"
    assert body["lost_reason"] is None


@pytest.mark.parametrize("count", [5, 50])
def test_deal_list_costs_two_queries_whatever_its_length(
    api, rep, count, django_assert_num_queries
):
    company = CompanyFactory()
    for i in range(count):
        make_deal(rep, company=company, title=f"Deal {i}")
    client = api.as_user(rep)
    # The token with its user (one join), the count, the page with company, owner,
    # channel and lost reason joined.
    with django_assert_num_queries(3):
        response = client.get(url("deal-list"), {"page_size": 100})
    assert response.status_code == 200
    assert response.json()["count"] == count
    assert len(response.json()["results"]) == count


def test_list_filters_searches_and_orders(api, rep):
    a = make_deal(rep, title="Alpha", at=timezone.now() - datetime.timedelta(days=3))
    b = deal_in_stage(rep, Stage.NEEDS, title="Beta")
    client = api.as_user(rep)
    assert [
        d["id"] for d in client.get(url("deal-list"), {"stage": "needs"}).json()["results"]
    ] == [b.pk]
    assert [d["id"] for d in client.get(url("deal-list"), {"search": "alp"}).json()["results"]] == [
        a.pk
    ]
    ordered = client.get(url("deal-list"), {"ordering": "title"}).json()["results"]
    assert [d["title"] for d in ordered] == ["Alpha", "Beta"]
    bad = client.get(url("deal-list"), {"stage": "nowhere"})
    assert bad.status_code == 400
    assert "stage" in bad.json()


def test_list_is_paginated(api, rep):
    for i in range(3):
        make_deal(rep, title=f"D{i}")
    body = api.as_user(rep).get(url("deal-list"), {"page_size": 2}).json()
    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert body["next"].endswith("page=2&page_size=2")
    assert api.as_user(rep).get(url("deal-list"), {"page": 9}).status_code == 404


def test_create_records_a_lead_owned_by_the_caller(api, rep):
    company = CompanyFactory(name="Acme")
    response = api.as_user(rep).post(
        url("deal-list"), {"title": "New", "company": company.pk, "estimated_value": "1500.00"}
    )
    assert response.status_code == 201, response.json()
    deal = Deal.objects.get(pk=response.json()["id"])
    assert (deal.owner, deal.created_by, deal.stage, deal.status) == (
        rep,
        rep,
        Stage.LEAD,
        Status.OPEN,
    )
    assert deal.estimated_value == Decimal("1500.00")
    assert list(deal.history.values_list("event", flat=True)) == ["created"]
    assert response["ETag"] == '"1"'


def test_a_manager_creates_a_deal_for_a_rep_of_the_team(api, manager, rep):
    company = CompanyFactory()
    response = api.as_user(manager).post(
        url("deal-list"), {"title": "For rep", "company": company.pk, "owner": rep.pk}
    )
    assert response.status_code == 201
    assert Deal.objects.get(pk=response.json()["id"]).owner == rep


def test_a_rep_cannot_give_a_deal_to_someone_else(api, rep, teammate):
    company = CompanyFactory()
    response = api.as_user(rep).post(
        url("deal-list"), {"title": "X", "company": company.pk, "owner": teammate.pk}
    )
    assert response.status_code == 400
    assert list(response.json()) == ["owner"]
    assert not Deal.objects.exists()


def test_create_with_bad_input_names_each_field(api, rep):
    response = api.as_user(rep).post(
        url("deal-list"), {"estimated_value": "-5", "currency": "euro", "qualification_score": 101}
    )
    assert response.status_code == 400
    assert set(response.json()) == {
        "title",
        "company",
        "estimated_value",
        "currency",
        "qualification_score",
    }
    assert not Deal.objects.exists()


def test_create_refused_by_the_domain_answers_400_with_code(api, rep):
    company = CompanyFactory()
    future = (timezone.now() + datetime.timedelta(days=2)).isoformat()
    response = api.as_user(rep).post(
        url("deal-list"), {"title": "X", "company": company.pk, "first_touch_at": future}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "future"
    assert body["errors"] == {"first_touch_at": ["A moment in the future cannot be recorded."]}


def test_update_goes_through_update_deal_and_is_logged(api, rep):
    deal = make_deal(rep, estimated_value=Decimal("100"))
    response = api.as_user(rep).patch(
        detail(deal), {"estimated_value": "250.00", "title": "Renamed", "version": 1}
    )
    assert response.status_code == 200, response.json()
    assert response.json()["version"] == 2
    assert response["ETag"] == '"2"'
    deal.refresh_from_db()
    assert (deal.title, deal.estimated_value) == ("Renamed", Decimal("250.00"))
    change = DealChange.objects.get(deal=deal)
    assert (change.field, change.old_value, change.new_value, change.by) == (
        "estimated_value",
        "100.00",
        "250.00",
        rep,
    )


def test_update_without_version_is_400(api, rep):
    deal = make_deal(rep, title="Kept")
    response = api.as_user(rep).patch(detail(deal), {"title": "Lost"})
    assert response.status_code == 400
    assert response.json() == {"version": ["This field is required."]}
    deal.refresh_from_db()
    assert deal.title == "Kept"


def test_update_with_a_stale_version_is_409_and_writes_nothing(api, rep):
    deal = make_deal(rep, title="Seen")
    domain.update_deal(deal, by=rep, title="Changed meanwhile", expected_version=1)
    response = api.as_user(rep).patch(detail(deal), {"title": "Mine", "version": 1})
    assert response.status_code == 409
    assert response.json()["code"] == "stale"
    assert response.json()["current_version"] == 2
    deal.refresh_from_db()
    assert (deal.title, deal.version) == ("Changed meanwhile", 2)


def test_if_match_with_an_old_etag_is_412(api, rep):
    deal = make_deal(rep, title="Seen")
    domain.update_deal(deal, by=rep, title="Changed meanwhile", expected_version=1)
    response = api.as_user(rep).patch(
        detail(deal), {"title": "Mine", "version": 2}, HTTP_IF_MATCH='"1"'
    )
    assert response.status_code == 412
    deal.refresh_from_db()
    assert deal.title == "Changed meanwhile"
    ok = api.as_user(rep).patch(detail(deal), {"title": "Mine", "version": 2}, HTTP_IF_MATCH='"2"')
    assert ok.status_code == 200
    assert ok["ETag"] == '"3"'


def test_move_forward_stamps_skipped_stages(api, rep):
    deal = make_deal(rep, at=timezone.now() - datetime.timedelta(days=5))
    response = api.as_user(rep).post(detail(deal, "move"), {"stage": "needs", "version": 1})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["stage"], body["version"]) == ("needs", 2)
    assert body["entered_qualification_at"] == body["entered_needs_at"]
    assert list(deal.history.values_list("event", "to_stage")) == [
        ("created", "lead"),
        ("skipped", "qualification"),
        ("moved", "needs"),
    ]


def test_a_refused_move_is_400_with_the_domain_message_and_code(api, rep):
    deal = deal_in_stage(rep, Stage.NEEDS)
    response = api.as_user(rep).post(
        detail(deal, "move"), {"stage": "qualification", "version": deal.version}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "backward"
    assert (
        body["detail"]
        == "A deal only moves forward: from Needs analysis it cannot go to Qualification."
    )
    negotiation = api.as_user(rep).post(
        detail(deal, "move"), {"stage": "negotiation", "version": deal.version}
    )
    assert negotiation.json()["code"] == "no_sent_offer"
    deal.refresh_from_db()
    assert deal.stage == Stage.NEEDS


def test_move_with_a_stale_version_is_409(api, rep):
    deal = make_deal(rep, at=timezone.now() - datetime.timedelta(days=5))
    domain.update_deal(deal, by=rep, title="Edited", expected_version=1)
    response = api.as_user(rep).post(detail(deal, "move"), {"stage": "needs", "version": 1})
    assert response.status_code == 409
    deal.refresh_from_db()
    assert deal.stage == Stage.LEAD


def test_move_with_an_unknown_stage_is_a_field_error(api, rep):
    deal = make_deal(rep)
    response = api.as_user(rep).post(detail(deal, "move"), {"stage": "heaven", "version": 1})
    assert response.status_code == 400
    assert response.json() == {"stage": ['"heaven" is not a valid choice.']}


def test_lose_then_reopen_by_a_manager_only(api, rep, manager):
    deal = deal_in_stage(rep, Stage.NEEDS)
    lost = api.as_user(rep).post(
        detail(deal, "lose"), {"lost_reason": "price", "note": "Too dear", "version": deal.version}
    )
    assert lost.status_code == 200, lost.json()
    assert (lost.json()["status"], lost.json()["lost_reason"], lost.json()["lost_stage"]) == (
        "lost",
        "price",
        "needs",
    )
    version = lost.json()["version"]
    refused = api.as_user(rep).post(detail(deal, "reopen"), {"version": version})
    assert refused.status_code == 403
    deal.refresh_from_db()
    assert deal.status == Status.LOST
    reopened = api.as_user(manager).post(detail(deal, "reopen"), {"version": version})
    assert reopened.status_code == 200
    assert (reopened.json()["status"], reopened.json()["stage"]) == ("open", "needs")


def test_lose_with_an_unknown_reason_is_400(api, rep):
    deal = make_deal(rep)
    response = api.as_user(rep).post(
        detail(deal, "lose"), {"lost_reason": "gremlins", "version": 1}
    )
    assert response.status_code == 400
    assert list(response.json()) == ["lost_reason"]


def test_disqualify_a_lead(api, rep):
    deal = make_deal(rep)
    response = api.as_user(rep).post(detail(deal, "disqualify"), {"version": 1})
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["lost_reason"]) == ("lost", "not_qualified")


def test_agree_close_and_win(api, rep):
    deal = deal_in_stage(rep, Stage.NEGOTIATION, value=Decimal("1000"))
    client = api.as_user(rep)
    agreed = client.post(
        detail(deal, "agree-terms"),
        {"agreed_value": "900.00", "discount_pct": "10", "version": deal.version},
    )
    assert agreed.status_code == 200, agreed.json()
    moved = client.post(
        detail(deal, "move"), {"stage": "closing", "version": agreed.json()["version"]}
    )
    assert moved.status_code == 200, moved.json()
    early_win = client.post(detail(deal, "win"), {"version": moved.json()["version"]})
    assert early_win.status_code == 400
    assert early_win.json()["code"] == "no_document"
    document = client.post(
        detail(deal, "closing-document"),
        {
            "document_type": "contract",
            "number": "C/7",
            "issue_date": timezone.localdate().isoformat(),
            "final_value": "900.00",
            "version": moved.json()["version"],
        },
    )
    assert document.status_code == 200, document.json()
    won = client.post(detail(deal, "win"), {"version": document.json()["version"]})
    assert won.status_code == 200, won.json()
    assert won.json()["status"] == "won"
    assert won.json()["current_value_base"] == "900.00"


def test_history_lists_stage_entries(api, rep):
    deal = deal_in_stage(rep, Stage.QUALIFICATION)
    body = api.as_user(rep).get(detail(deal, "history")).json()
    assert [(h["event"], h["from_stage"], h["to_stage"]) for h in body] == [
        ("created", None, "lead"),
        ("moved", "lead", "qualification"),
    ]


def test_malformed_json_is_400_not_500(api, rep):
    deal = make_deal(rep)
    response = api.as_user(rep).generic(
        "POST", detail(deal, "move"), "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


# Format suffixes (DRF routes every action also as .json / .api) ------------------------


def test_a_move_with_a_format_suffix_moves_the_deal(api, rep):
    deal = make_deal(rep)
    response = api.as_user(rep).post(
        url("deal-move", pk=deal.pk, format="json"), {"stage": "qualification", "version": 1}
    )
    assert response.status_code == 200, response.content
    assert (response.json()["stage"], response.json()["version"]) == ("qualification", 2)
    assert response["Content-Type"] == "application/json"
    deal.refresh_from_db()
    assert (deal.stage, deal.version) == (Stage.QUALIFICATION, 2)


def test_the_history_with_a_format_suffix_lists_stage_entries(api, rep):
    deal = deal_in_stage(rep, Stage.QUALIFICATION)
    response = api.as_user(rep).get(url("deal-history", pk=deal.pk, format="json"))
    assert response.status_code == 200, response.content
    assert [(h["event"], h["to_stage"]) for h in response.json()] == [
        ("created", "lead"),
        ("moved", "qualification"),
    ]


@pytest.mark.parametrize(
    "action", ["lose", "disqualify", "reopen", "win", "agree-terms", "closing-document"]
)
def test_every_deal_action_with_a_format_suffix_reads_its_input(api, rep, action):
    deal = make_deal(rep)
    response = api.as_user(rep).post(url(f"deal-{action}", pk=deal.pk, format="json"), {})
    assert response.status_code == 400, response.content
    assert response.json()["version"] == ["This field is required."]
    deal.refresh_from_db()
    assert (deal.stage, deal.status, deal.version) == (Stage.LEAD, Status.OPEN, 1)
