"""Offers, rounds, closing documents, activities, reference data, spend, targets, KPI
snapshots and the funnel report through the API: scoping, roles, 400s and 409s."""

import datetime
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from funnel import domain
from funnel.models import (
    Activity,
    Channel,
    Company,
    LostReason,
    MarketingSpend,
    NegotiationRound,
    Offer,
    OfferStatus,
)
from funnel.stages import Stage
from kpis.models import KpiSnapshot, Target
from tests.factories import CompanyFactory, days_ago, deal_in_stage, make_deal, won_deal

pytestmark = pytest.mark.django_db


def url(name, **kwargs):
    return reverse(f"api:{name}", kwargs=kwargs)


def ids(response):
    assert response.status_code == 200, response.json()
    return sorted(row["id"] for row in response.json()["results"])


# Offers -------------------------------------------------------------------------------


def test_offer_is_started_sent_and_accepted(api, rep):
    deal = deal_in_stage(rep, Stage.OFFER)
    client = api.as_user(rep)
    created = client.post(url("offer-list"), {"deal": deal.pk, "value": "1200.00"})
    assert created.status_code == 201, created.json()
    offer_id = created.json()["id"]
    assert (created.json()["version"], created.json()["status"]) == (1, "draft")
    sent = client.post(url("offer-send", pk=offer_id), {})
    assert sent.status_code == 200
    assert sent.json()["status"] == "sent"
    accepted = client.post(url("offer-accept", pk=offer_id), {})
    assert accepted.status_code == 200
    assert accepted.json()["status"] == "accepted"
    deal.refresh_from_db()
    assert deal.agreed_value == Decimal("1200.00")


def test_offer_actions_answer_with_a_format_suffix(api, rep):
    deal = deal_in_stage(rep, Stage.OFFER)
    client = api.as_user(rep)
    first = client.post(url("offer-list"), {"deal": deal.pk, "value": "1200.00"}).json()["id"]
    sent = client.post(url("offer-send", pk=first, format="json"), {})
    assert (sent.status_code, sent.json()["status"]) == (200, "sent")
    rejected = client.post(url("offer-reject", pk=first, format="json"), {})
    assert (rejected.status_code, rejected.json()["status"]) == (200, "rejected")
    second = client.post(url("offer-list"), {"deal": deal.pk, "value": "1100.00"}).json()["id"]
    client.post(url("offer-send", pk=second, format="json"), {})
    accepted = client.post(url("offer-accept", pk=second, format="json"), {})
    assert (accepted.status_code, accepted.json()["status"]) == (200, "accepted")
    deal.refresh_from_db()
    assert deal.agreed_value == Decimal("1100.00")


def test_offer_for_another_reps_deal_is_refused_as_unknown(api, rep, outsider):
    deal = deal_in_stage(outsider, Stage.OFFER)
    response = api.as_user(rep).post(url("offer-list"), {"deal": deal.pk, "value": "1"})
    assert response.status_code == 400
    assert response.json() == {"deal": [f'Invalid pk "{deal.pk}" - object does not exist.']}
    assert not Offer.objects.exists()


def test_offers_of_others_are_invisible(api, rep, outsider):
    deal = deal_in_stage(outsider, Stage.NEGOTIATION)
    offer = deal.offers.get()
    client = api.as_user(rep)
    assert ids(client.get(url("offer-list"))) == []
    assert client.get(url("offer-detail", pk=offer.pk)).status_code == 404
    assert client.post(url("offer-reject", pk=offer.pk), {}).status_code == 404
    offer.refresh_from_db()
    assert offer.status == OfferStatus.SENT


def test_offer_before_the_offer_stage_is_a_domain_400(api, rep):
    deal = deal_in_stage(rep, Stage.NEEDS)
    response = api.as_user(rep).post(url("offer-list"), {"deal": deal.pk, "value": "10"})
    assert response.status_code == 400
    assert response.json()["code"] == "too_early"


def test_sending_a_sent_offer_is_400(api, rep):
    deal = deal_in_stage(rep, Stage.NEGOTIATION)
    offer = deal.offers.get()
    response = api.as_user(rep).post(url("offer-send", pk=offer.pk), {})
    assert response.status_code == 400
    assert response.json()["code"] == "not_draft"


def test_offer_action_with_a_stale_deal_version_is_409(api, rep):
    deal = deal_in_stage(rep, Stage.OFFER)
    offer = domain.start_offer(deal, value=100, by=rep)
    stale = deal.version - 1
    response = api.as_user(rep).post(url("offer-send", pk=offer.pk), {"version": stale})
    assert response.status_code == 409
    offer.refresh_from_db()
    assert offer.status == OfferStatus.DRAFT


# Rounds, activities, closing documents ------------------------------------------------


def test_round_is_logged_in_negotiation(api, rep):
    deal = deal_in_stage(rep, Stage.NEGOTIATION)
    response = api.as_user(rep).post(
        url("round-list"),
        {
            "deal": deal.pk,
            "held_at": timezone.now().isoformat(),
            "proposed_value": "950.00",
            "discount_pct": "5",
        },
    )
    assert response.status_code == 201, response.json()
    assert (response.json()["number"], response.json()["by"]) == (1, rep.pk)
    assert NegotiationRound.objects.get().proposed_value == Decimal("950.00")


def test_round_outside_negotiation_is_400_and_bad_discount_a_field_error(api, rep):
    deal = deal_in_stage(rep, Stage.OFFER)
    client = api.as_user(rep)
    now = timezone.now().isoformat()
    refused = client.post(
        url("round-list"), {"deal": deal.pk, "held_at": now, "proposed_value": "1"}
    )
    assert refused.status_code == 400
    assert refused.json()["code"] == "not_negotiating"
    bad = client.post(
        url("round-list"),
        {"deal": deal.pk, "held_at": now, "proposed_value": "1", "discount_pct": "120"},
    )
    assert bad.status_code == 400
    assert list(bad.json()) == ["discount_pct"]


def test_activities_are_logged_and_scoped(api, rep, teammate, manager):
    deal = make_deal(rep)
    other = make_deal(teammate)
    domain.log_activity(other, kind="call", held_at=days_ago(1), by=teammate)
    created = api.as_user(rep).post(
        url("activity-list"),
        {"deal": deal.pk, "kind": "meeting", "held_at": days_ago(2).isoformat(), "outcome": "Ok"},
    )
    assert created.status_code == 201, created.json()
    mine = Activity.objects.get(deal=deal)
    assert (mine.kind, mine.by, mine.outcome) == ("meeting", rep, "Ok")
    assert ids(api.as_user(rep).get(url("activity-list"))) == [mine.pk]
    assert len(ids(api.as_user(manager).get(url("activity-list")))) == 2
    bad = api.as_user(rep).post(
        url("activity-list"), {"deal": deal.pk, "kind": "telepathy", "held_at": "yesterday"}
    )
    assert bad.status_code == 400
    assert set(bad.json()) == {"kind", "held_at"}


def test_closing_documents_are_scoped(api, rep, outsider):
    deal = won_deal(rep)
    won_deal(outsider)
    body = api.as_user(rep).get(url("closing-document-list")).json()
    assert [row["deal"] for row in body["results"]] == [deal.pk]
    assert body["results"][0]["signed_at"] is not None


# Reference data -----------------------------------------------------------------------


def test_companies_and_contacts_are_created_with_validation(api, rep):
    client = api.as_user(rep)
    company = client.post(url("company-list"), {"name": "Acme", "website": "https://acme.pl"})
    assert company.status_code == 201
    duplicate = client.post(url("company-list"), {"name": "Acme"})
    assert duplicate.status_code == 400
    assert list(duplicate.json()) == ["name"]
    contact = client.post(
        url("contact-list"), {"company": company.json()["id"], "last_name": "Nowak", "email": "x"}
    )
    assert contact.status_code == 400
    assert list(contact.json()) == ["email"]
    assert Company.objects.count() == 1


def test_channels_and_lost_reasons_are_read_by_all_and_edited_by_an_admin(api, rep, admin):
    assert api.as_user(rep).post(url("channel-list"), {"name": "Ads"}).status_code == 403
    assert not Channel.objects.filter(name="Ads").exists()
    assert api.as_user(admin).post(url("channel-list"), {"name": "Ads"}).status_code == 201
    names = [c["name"] for c in api.as_user(rep).get(url("channel-list")).json()["results"]]
    assert names == ["Ads"]
    codes = [r["code"] for r in api.as_user(rep).get(url("lost-reason-list")).json()["results"]]
    assert codes == list(
        LostReason.objects.order_by("position", "code").values_list("code", flat=True)
    )
    assert "price" in codes
    refused = api.as_user(rep).post(
        url("lost-reason-list"), {"code": "x", "name_en": "X", "name_pl": "X"}
    )
    assert refused.status_code == 403


def test_users_lists_the_people_one_may_see(api, rep, teammate, manager, outsider):
    usernames = [
        u["username"] for u in api.as_user(manager).get(url("user-list")).json()["results"]
    ]
    assert usernames == ["manager", "rep", "teammate"]
    assert [u["username"] for u in api.as_user(rep).get(url("user-list")).json()["results"]] == [
        "rep"
    ]


# Marketing spend ----------------------------------------------------------------------


def test_spend_is_for_managers_and_converted_to_base(api, rep, manager):
    channel = Channel.objects.create(name="Web")
    body = {"channel": channel.pk, "month": "2025-01-01", "amount": "1000.00", "currency": "PLN"}
    assert api.as_user(rep).post(url("marketing-spend-list"), body).status_code == 403
    assert api.as_user(rep).get(url("marketing-spend-list")).status_code == 403
    created = api.as_user(manager).post(url("marketing-spend-list"), body)
    assert created.status_code == 201, created.json()
    assert created.json()["amount_base"] == "1000.00"
    again = api.as_user(manager).post(url("marketing-spend-list"), body)
    assert again.status_code == 400
    assert MarketingSpend.objects.count() == 1
    mid_month = api.as_user(manager).post(
        url("marketing-spend-list"), {**body, "month": "2025-02-15"}
    )
    assert mid_month.status_code == 400
    assert mid_month.json() == {"month": ["Give the first day of the month."]}


# Targets ------------------------------------------------------------------------------


def test_a_manager_sets_targets_for_their_people_and_team_only(
    api, manager, rep, outsider, team_a, team_b
):
    client = api.as_user(manager)
    base = {"grain": "month", "period_start": "2025-03-01", "amount": "50000.00"}
    for_rep = client.post(url("target-list"), {**base, "rep": rep.pk})
    assert for_rep.status_code == 201, for_rep.json()
    assert Target.objects.get().set_by == manager
    for_team = client.post(url("target-list"), {**base, "team": team_a.pk})
    assert for_team.status_code == 201
    assert client.post(url("target-list"), {**base, "team": team_b.pk}).status_code == 400
    assert client.post(url("target-list"), {**base, "rep": outsider.pk}).status_code == 400
    company = client.post(url("target-list"), base)
    assert company.status_code == 400
    assert list(company.json()) == ["team"]
    twice = client.post(url("target-list"), {**base, "rep": rep.pk})
    assert twice.status_code == 400
    not_first = client.post(
        url("target-list"), {**base, "rep": rep.pk, "period_start": "2025-03-02"}
    )
    assert not_first.json() == {"period_start": ["Give the first day of the period."]}
    assert Target.objects.count() == 2


def test_reps_read_their_targets_but_cannot_set_them(api, manager, rep, teammate, admin):
    mine = Target.objects.create(
        grain="month", period_start=datetime.date(2025, 3, 1), rep=rep, amount=1
    )
    Target.objects.create(
        grain="month", period_start=datetime.date(2025, 3, 1), rep=teammate, amount=2
    )
    assert ids(api.as_user(rep).get(url("target-list"))) == [mine.pk]
    refused = api.as_user(rep).patch(url("target-detail", pk=mine.pk), {"amount": "9"})
    assert refused.status_code == 403
    mine.refresh_from_db()
    assert mine.amount == 1
    company = api.as_user(admin).post(
        url("target-list"), {"grain": "quarter", "period_start": "2025-01-01", "amount": "9"}
    )
    assert company.status_code == 201


# KPIs ---------------------------------------------------------------------------------


def _snapshot(slice_key, value, kpi="leads", month=3):
    return KpiSnapshot.objects.create(
        kpi=kpi,
        grain="month",
        period_start=datetime.date(2025, month, 1),
        slice=slice_key,
        value=value,
        numerator=value,
    )


def test_kpi_snapshots_are_scoped_to_the_slices_one_may_see(
    api, rep, teammate, manager, outsider, admin, team_a, team_b
):
    rows = {
        "company": _snapshot("company", 10),
        "team_a": _snapshot(f"team:{team_a.pk}", 6),
        "team_b": _snapshot(f"team:{team_b.pk}", 4),
        "rep": _snapshot(f"rep:{rep.pk}", 3),
        "teammate": _snapshot(f"rep:{teammate.pk}", 3),
        "outsider": _snapshot(f"rep:{outsider.pk}", 4),
        "channel": _snapshot("channel:1", 2),
    }

    def seen(user):
        return ids(api.as_user(user).get(url("kpi-snapshot-list")))

    assert seen(rep) == [rows["rep"].pk]
    assert seen(manager) == sorted(rows[k].pk for k in ("team_a", "rep", "teammate"))
    assert seen(admin) == sorted(r.pk for r in rows.values())
    other = api.as_user(rep).get(url("kpi-snapshot-detail", pk=rows["outsider"].pk))
    assert other.status_code == 404


def test_kpi_snapshots_filter_by_kpi_grain_period_and_slice(api, admin):
    march = _snapshot("company", 1, month=3)
    _snapshot("company", 2, month=5)
    _snapshot("company", 3, kpi="qualified_leads", month=3)
    client = api.as_user(admin)
    found = client.get(
        url("kpi-snapshot-list"),
        {
            "kpi": "leads",
            "grain": "month",
            "period_after": "2025-02-01",
            "period_before": "2025-04-01",
            "slice": "company",
        },
    )
    assert ids(found) == [march.pk]
    assert found.json()["results"][0]["value"] == "1.00000000"
    assert client.get(url("kpi-snapshot-list"), {"kpi": "nonsense"}).status_code == 400
    assert client.get(url("kpi-snapshot-list"), {"period_after": "March"}).status_code == 400


def test_funnel_report_reads_snapshots_for_an_allowed_slice(api, rep, outsider, admin):
    _snapshot(f"rep:{rep.pk}", 7)
    client = api.as_user(rep)
    response = client.get(url("funnel-report"), {"grain": "month", "period": "2025-03"})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["slice"], body["period"], body["period_start"], body["period_end"]) == (
        f"rep:{rep.pk}",
        "2025-03",
        "2025-03-01",
        "2025-04-01",
    )
    leads = next(k for k in body["kpis"] if k["code"] == "leads")
    assert (leads["value"], leads["numerator"], leads["stage"]) == (
        "7.00000000",
        "7.00000000",
        "lead",
    )
    assert client.get(url("funnel-report"), {"slice": "company"}).status_code == 404
    assert client.get(url("funnel-report"), {"slice": "rep:outsider"}).status_code == 404
    assert client.get(url("funnel-report"), {"period": "March"}).status_code == 400
    company = api.as_user(admin).get(url("funnel-report"), {"period": "2025-03"})
    assert company.json()["slice"] == "company"
    leads = next(k for k in company.json()["kpis"] if k["code"] == "leads")
    assert leads["value"] == "0.00000000"  # stored sparsely: no row reads as the empty value


def test_kpi_definitions_come_from_the_registry(api, rep):
    from kpis.definitions import KPIS

    body = api.as_user(rep).get(url("kpi-definitions")).json()
    assert [row["code"] for row in body] == [k.code for k in KPIS]


# Throttling ---------------------------------------------------------------------------


def test_the_request_past_the_users_rate_is_429(api, rep, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "3/min", "anon": "2/min"},
    }
    client = api.as_user(rep)
    assert [client.get(url("deal-list")).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert "Retry-After" in client.get(url("deal-list"))


def test_the_anonymous_request_past_the_rate_is_429(client, settings, rep):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "100/min", "anon": "2/min"},
    }
    codes = [
        client.post(url("token"), {"username": "rep", "password": "wrong"}).status_code
        for _ in range(3)
    ]
    assert codes == [400, 400, 429]


# Schema and docs ----------------------------------------------------------------------


def test_schema_and_docs_are_public_and_everything_else_is_not(client):
    schema = client.get(reverse("api:schema"))
    assert schema.status_code == 200
    assert b"/api/v1/deals/{id}/move/" in schema.content
    docs = client.get(reverse("api:docs"))
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "vendor/swagger-ui/swagger-ui-bundle.js" in html
    assert "js/api-docs.js" in html
    assert "<script>" not in html and "style=" not in html and "cdn" not in html.lower()
    for name in ("deal-list", "offer-list", "kpi-snapshot-list", "funnel-report", "export-deals"):
        assert client.get(url(name)).status_code == 401


def test_an_unknown_api_path_is_a_json_404(api, rep):
    response = api.as_user(rep).post("/api/v1/deals/1.5/move/", {})
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_company_row_is_shared_reference_data(api, rep, outsider):
    company = CompanyFactory(name="Shared")
    make_deal(outsider, company=company)
    names = [c["name"] for c in api.as_user(rep).get(url("company-list")).json()["results"]]
    assert names == ["Shared"]
