"""The deal page and each of its forms: every change through the domain functions,
invalid input re-displayed as typed, a stale page refused with the current data."""

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from funnel import domain
from funnel.models import Activity, ClosingDocument, Deal, DealChange, Offer, StageHistory
from funnel.stages import Stage, Status
from tests.factories import ChannelFactory, days_ago, deal_in_stage, lost_reason

pytestmark = pytest.mark.django_db


def today():
    return timezone.localdate().isoformat()


def post(client, deal, path, data=None, version=None):
    deal.refresh_from_db()
    body = {"version": deal.version if version is None else version, **(data or {})}
    return client.post(f"/deals/{deal.pk}/{path}", body)


def assert_saved(response, deal, anchor):
    assert (response.status_code, response["Location"]) == (302, f"/deals/{deal.pk}/#{anchor}")


def events(deal):
    return list(StageHistory.objects.filter(deal=deal).values_list("event", "to_stage"))


# The page -------------------------------------------------------------------------------


def test_the_page_shows_progress_with_entry_dates_history_and_captured_data(client, rep):
    deal = deal_in_stage(rep, Stage.OFFER, start_days_ago=10)
    domain.update_deal(deal, heard_from="LinkedIn", qualification_score=70, by=rep)
    client.force_login(rep)
    response = client.get(f"/deals/{deal.pk}/")
    assert response.status_code == 200
    steps = [(s["stage"].value, s["state"], s["entered"]) for s in response.context["progress"]]
    assert steps == [
        ("lead", "done", days_ago(10)),
        ("qualification", "done", days_ago(9)),
        ("needs", "done", days_ago(8)),
        ("offer", "current", days_ago(7)),
        ("negotiation", "ahead", None),
        ("closing", "ahead", None),
    ]
    html = response.content.decode()
    assert f'<span class="stage-date">{days_ago(7):%m/%d/%Y}</span>' in html
    assert "Moved to Offer" in html
    assert "LinkedIn" in html
    assert sorted(response.context["forms"]) == [
        "activity",
        "details",
        "move",
        "offer",
        "offer_action",
        "terms",
    ]
    assert response.context["changes"] is None  # the change log is for managers


def test_skipped_stages_show_as_skipped(client, rep):
    deal = deal_in_stage(rep, Stage.LEAD, start_days_ago=5)
    domain.move_forward(deal, Stage.OFFER, by=rep, at=days_ago(2))
    client.force_login(rep)
    response = client.get(f"/deals/{deal.pk}/")
    assert [s["state"] for s in response.context["progress"]] == [
        "done",
        "skipped",
        "skipped",
        "current",
        "ahead",
        "ahead",
    ]


@pytest.mark.parametrize("n", [1, 6])
def test_the_deal_page_costs_the_same_queries_however_much_it_holds(
    client, manager, rep, n, django_assert_num_queries
):
    deal = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=40)
    for i in range(n):
        domain.log_activity(deal, kind="call", held_at=days_ago(3), by=rep)
        domain.add_round(deal, held_at=days_ago(3), proposed_value=1000 + i, by=rep)
        offer = domain.start_offer(deal, value=900 + i, by=rep)
        domain.send_offer(offer, by=rep)
        domain.update_deal(deal, expected_close_date=datetime.date(2030, 1, 1 + i), by=rep)
    client.force_login(manager)
    # session, user, deal (+company, contact, channel, owner, team, reason), history,
    # closing document, offers, activities, rounds, changes, owners and channels of the
    # details form
    with django_assert_num_queries(11):
        response = client.get(f"/deals/{deal.pk}/")
    assert len(response.context["offers"]) == n + 1
    # Who sent each offer, read with the offers (no query per offer).
    content = response.content.decode()
    table = content[
        content.index("offer-table") : content.index("</table>", content.index("offer-table"))
    ]
    assert table.count(f'<span class="d-block small text-body-secondary">{rep}</span>') == n + 1


# Lead and details -------------------------------------------------------------------------


def test_editing_details_is_logged_and_shown_to_the_manager(client, rep, manager):
    web = ChannelFactory(name="Web")
    deal = deal_in_stage(rep, Stage.LEAD)
    client.force_login(rep)
    response = post(
        client,
        deal,
        "details/",
        {
            "title": "Bigger",
            "channel": web.pk,
            "estimated_value": "15000",
            "expected_close_date": "2030-06-30",
        },
    )
    assert_saved(response, deal, "details")
    deal.refresh_from_db()
    assert (deal.title, deal.channel, deal.estimated_value) == ("Bigger", web, Decimal("15000.00"))
    changes = sorted(
        DealChange.objects.filter(deal=deal).values_list("field", "old_value", "new_value", "by")
    )
    assert changes == [
        ("estimated_value", "10000.00", "15000.00", rep.pk),
        ("expected_close_date", "", "2030-06-30", rep.pk),
    ]
    client.force_login(manager)
    html = client.get(f"/deals/{deal.pk}/").content.decode()
    assert 'data-field="estimated_value"' in html
    assert (
        '<span class="old-value">10000.00</span> → <span class="new-value">15000.00</span>' in html
    )


def test_a_manager_reassigns_the_owner_within_the_team_only(
    client, manager, rep, teammate, outsider
):
    deal = deal_in_stage(rep, Stage.LEAD)
    client.force_login(manager)
    data = {"title": "Deal", "estimated_value": "10000", "owner": outsider.pk}
    response = post(client, deal, "details/", data)
    assert response.status_code == 200
    assert response.context["forms"]["details"].errors["owner"] == [
        "Select a valid choice. That choice is not one of the available choices."
    ]
    response = post(client, deal, "details/", {**data, "owner": teammate.pk})
    assert_saved(response, deal, "details")
    deal.refresh_from_db()
    assert deal.owner == teammate


def test_a_rep_cannot_reassign_their_deal(client, rep, teammate):
    deal = deal_in_stage(rep, Stage.LEAD)
    client.force_login(rep)
    post(
        client,
        deal,
        "details/",
        {"title": "Deal", "estimated_value": "10000", "owner": teammate.pk},
    )
    deal.refresh_from_db()
    assert deal.owner == rep


# Qualification, needs, activities ---------------------------------------------------------


def test_qualification_answers_are_saved(client, rep):
    deal = deal_in_stage(rep, Stage.QUALIFICATION)
    client.force_login(rep)
    answers = {
        "heard_from": "Trade fair",
        "contact_prompt": "New plant",
        "product_scope": "ERP + BI",
        "industry": "Food",
        "segment": "Mid-market",
        "qualification_score": "85",
    }
    assert_saved(post(client, deal, "qualification/", answers), deal, "qualification")
    deal.refresh_from_db()
    assert {k: getattr(deal, k) for k in answers} == {**answers, "qualification_score": 85}


def test_invalid_input_is_shown_on_the_field_and_keeps_what_was_typed(client, rep):
    deal = deal_in_stage(rep, Stage.QUALIFICATION)
    version = deal.version
    client.force_login(rep)
    response = post(
        client, deal, "qualification/", {"heard_from": "Trade fair", "qualification_score": "150"}
    )
    assert response.status_code == 200
    form = response.context["forms"]["qualification"]
    assert form.errors == {
        "qualification_score": ["Ensure this value is less than or equal to 100."]
    }
    html = response.content.decode()
    assert 'value="Trade fair"' in html
    assert 'name="qualification_score" value="150"' in html
    assert 'aria-invalid="true"' in html
    assert (
        'id="id_qualification_score_errors">Ensure this value is less than or equal to 100.' in html
    )
    deal.refresh_from_db()
    assert (deal.heard_from, deal.version) == ("", version)


def test_needs_are_saved(client, rep):
    deal = deal_in_stage(rep, Stage.NEEDS)
    client.force_login(rep)
    data = {
        "problems": "Slow invoicing",
        "desired_outcomes": "Invoices in a day",
        "expected_close_date": "2031-01-31",
    }
    assert_saved(post(client, deal, "needs/", data), deal, "needs")
    deal.refresh_from_db()
    assert (deal.problems, deal.desired_outcomes, deal.expected_close_date) == (
        "Slow invoicing",
        "Invoices in a day",
        datetime.date(2031, 1, 31),
    )


def test_an_activity_is_logged(client, rep):
    deal = deal_in_stage(rep, Stage.NEEDS)
    held = days_ago(1, hour=9)
    client.force_login(rep)
    response = post(
        client,
        deal,
        "activities/",
        {"kind": "audit", "held_at": held.strftime("%Y-%m-%dT%H:%M"), "outcome": "Two gaps found"},
    )
    assert_saved(response, deal, "activity")
    assert list(
        Activity.objects.filter(deal=deal).values_list("kind", "held_at", "outcome", "by")
    ) == [("audit", held, "Two gaps found", rep.pk)]


def test_an_activity_before_the_lead_existed_is_refused_on_its_field(client, rep):
    deal = deal_in_stage(rep, Stage.NEEDS, start_days_ago=10)
    client.force_login(rep)
    response = post(
        client,
        deal,
        "activities/",
        {"kind": "call", "held_at": days_ago(20).strftime("%Y-%m-%dT%H:%M")},
    )
    assert response.context["forms"]["activity"].errors == {
        "held_at": ["An activity cannot precede the lead's creation."]
    }
    assert Activity.objects.count() == 0


# Moving -----------------------------------------------------------------------------------


def test_moving_forward_one_stage(client, rep):
    deal = deal_in_stage(rep, Stage.LEAD)
    client.force_login(rep)
    assert_saved(post(client, deal, "move/", {"to_stage": "qualification"}), deal, "move")
    deal.refresh_from_db()
    assert deal.stage == Stage.QUALIFICATION
    assert events(deal)[-1] == ("moved", "qualification")
    assert StageHistory.objects.filter(deal=deal).last().by == rep


def test_a_move_the_domain_refuses_is_shown_and_changes_nothing(client, rep):
    deal = deal_in_stage(rep, Stage.OFFER)
    client.force_login(rep)
    response = post(client, deal, "move/", {"to_stage": "negotiation"})
    assert response.status_code == 200
    assert response.context["forms"]["move"].errors == {
        "to_stage": ["Negotiation starts from a sent offer: send an offer first."]
    }
    deal.refresh_from_db()
    assert deal.stage == Stage.OFFER


def test_a_backward_move_is_not_a_choice(client, rep):
    deal = deal_in_stage(rep, Stage.NEEDS)
    client.force_login(rep)
    response = post(client, deal, "move/", {"to_stage": "lead"})
    assert response.context["forms"]["move"].errors == {
        "to_stage": ["Select a valid choice. lead is not one of the available choices."]
    }


# Offers, negotiation, closing -------------------------------------------------------------


def test_offers_are_started_sent_and_answered(client, rep):
    deal = deal_in_stage(rep, Stage.OFFER)
    client.force_login(rep)
    assert_saved(post(client, deal, "offers/", {"value": "9500"}), deal, "offer")
    offer = Offer.objects.get(deal=deal)
    assert (offer.version, offer.value, offer.status) == (1, Decimal("9500.00"), "draft")
    assert_saved(post(client, deal, f"offers/{offer.pk}/send/"), deal, "offer_action")
    assert_saved(post(client, deal, "offers/", {"value": "9000"}), deal, "offer")
    second = Offer.objects.get(deal=deal, version=2)
    post(client, deal, f"offers/{second.pk}/send/")
    assert_saved(post(client, deal, f"offers/{second.pk}/reject/"), deal, "offer_action")
    assert list(Offer.objects.filter(deal=deal).values_list("version", "status")) == [
        (1, "superseded"),
        (2, "rejected"),
    ]
    assert_saved(post(client, deal, "offers/", {"value": "8800"}), deal, "offer")
    third = Offer.objects.get(deal=deal, version=3)
    post(client, deal, f"offers/{third.pk}/send/")
    assert_saved(post(client, deal, f"offers/{third.pk}/accept/"), deal, "offer_action")
    deal.refresh_from_db()
    assert (third.__class__.objects.get(pk=third.pk).status, deal.agreed_value) == (
        "accepted",
        Decimal("8800.00"),
    )


def test_an_offer_of_another_deal_is_not_found_through_this_one(client, rep):
    mine = deal_in_stage(rep, Stage.OFFER)
    other = deal_in_stage(rep, Stage.OFFER)
    offer = domain.start_offer(other, value=100, by=rep)
    client.force_login(rep)
    assert post(client, mine, f"offers/{offer.pk}/send/").status_code == 404
    offer.refresh_from_db()
    assert offer.status == "draft"


def test_sending_an_offer_twice_shows_the_refusal(client, rep):
    deal = deal_in_stage(rep, Stage.OFFER)
    offer = domain.start_offer(deal, value=100, by=rep)
    client.force_login(rep)
    post(client, deal, f"offers/{offer.pk}/send/")
    response = post(client, deal, f"offers/{offer.pk}/send/")
    assert response.status_code == 200
    assert "Only a draft offer can be sent." in response.content.decode()


def test_negotiation_rounds_and_terms(client, rep):
    deal = deal_in_stage(rep, Stage.NEGOTIATION)
    client.force_login(rep)
    response = post(
        client, deal, "rounds/", {"held_on": today(), "proposed_value": "9200", "discount_pct": "8"}
    )
    assert_saved(response, deal, "round")
    assert list(deal.rounds.values_list("number", "proposed_value", "discount_pct")) == [
        (1, Decimal("9200.00"), Decimal("8.00"))
    ]
    response = post(client, deal, "terms/", {"agreed_value": "9100", "discount_pct": "9"})
    assert_saved(response, deal, "terms")
    deal.refresh_from_db()
    assert (deal.agreed_value, deal.discount_pct) == (Decimal("9100.00"), Decimal("9.00"))


def test_a_discount_over_100_is_refused(client, rep):
    deal = deal_in_stage(rep, Stage.NEGOTIATION)
    client.force_login(rep)
    response = post(client, deal, "terms/", {"agreed_value": "9100", "discount_pct": "120"})
    assert response.context["forms"]["terms"].errors == {
        "discount_pct": ["Ensure this value is less than or equal to 100."]
    }


def test_polish_amounts_are_read_with_a_decimal_comma(client, rep):
    deal = deal_in_stage(rep, Stage.NEGOTIATION)
    client.force_login(rep)
    client.cookies["django_language"] = "pl"
    response = post(client, deal, "terms/", {"agreed_value": "9100,50", "discount_pct": "7,5"})
    assert response.status_code == 302
    deal.refresh_from_db()
    assert (deal.agreed_value, deal.discount_pct) == (Decimal("9100.50"), Decimal("7.50"))


def test_the_closing_document_with_a_signed_date_wins_the_deal(client, rep):
    deal = deal_in_stage(rep, Stage.CLOSING, start_days_ago=20)
    client.force_login(rep)
    issued = (timezone.localdate() - datetime.timedelta(days=2)).isoformat()
    data = {
        "document_type": "contract",
        "number": "U/7",
        "issue_date": issued,
        "final_value": "9000",
    }
    assert_saved(post(client, deal, "closing/", data), deal, "closing")
    deal.refresh_from_db()
    assert deal.status == Status.OPEN
    assert_saved(post(client, deal, "closing/", {**data, "signed_on": today()}), deal, "closing")
    deal.refresh_from_db()
    document = ClosingDocument.objects.get(deal=deal)
    assert (deal.status, document.number, document.final_value) == (
        Status.WON,
        "U/7",
        Decimal("9000.00"),
    )
    assert document.signed_at == deal.won_at
    assert events(deal)[-1] == ("won", "closing")


def test_a_signed_date_before_the_issue_date_is_refused_and_nothing_saved(client, rep):
    deal = deal_in_stage(rep, Stage.CLOSING, start_days_ago=20)
    client.force_login(rep)
    data = {
        "document_type": "proforma",
        "issue_date": today(),
        "final_value": "9000",
        "signed_on": (timezone.localdate() - datetime.timedelta(days=1)).isoformat(),
    }
    response = post(client, deal, "closing/", data)
    assert response.context["forms"]["closing"].errors == {
        "signed_on": ["The deal cannot be won before its document was issued."]
    }
    assert not ClosingDocument.objects.filter(deal=deal).exists()


def test_a_win_the_domain_refuses_leaves_no_document_behind(client, rep):
    deal = deal_in_stage(rep, Stage.CLOSING, start_days_ago=20)
    client.force_login(rep)
    # Signed "before" the deal's latest event: the domain refuses the win, and the
    # document saved in the same submission is rolled back with it.
    issued = (timezone.localdate() - datetime.timedelta(days=15)).isoformat()
    data = {
        "document_type": "contract",
        "issue_date": issued,
        "final_value": "9000",
        "signed_on": issued,
    }
    response = post(client, deal, "closing/", data)
    assert response.status_code == 200
    assert list(response.context["forms"]["closing"].errors) == ["issue_date"]
    assert not ClosingDocument.objects.filter(deal=deal).exists()
    deal.refresh_from_db()
    assert deal.status == Status.OPEN


# Lost, disqualified, reopened -------------------------------------------------------------


def test_mark_lost_asks_for_confirmation_before_anything_changes(client, rep):
    deal = deal_in_stage(rep, Stage.OFFER)
    price = lost_reason("price")
    client.force_login(rep)
    assert client.get(f"/deals/{deal.pk}/lost/").status_code == 200
    response = post(client, deal, "lost/", {"lost_reason": price.pk, "note": "Too dear"})
    assert response.templates[0].name == "funnel/mark_lost_confirm.html"
    html = response.content.decode()
    assert "Mark this deal lost?" in html
    assert '<input type="hidden" name="confirm" value="1">' in html
    deal.refresh_from_db()
    assert deal.status == Status.OPEN

    response = post(
        client, deal, "lost/", {"lost_reason": price.pk, "note": "Too dear", "confirm": "1"}
    )
    assert (response.status_code, response["Location"]) == (302, f"/deals/{deal.pk}/")
    deal.refresh_from_db()
    assert (deal.status, deal.lost_stage, deal.lost_reason, deal.lost_note) == (
        Status.LOST,
        Stage.OFFER,
        price,
        "Too dear",
    )


def test_mark_lost_without_a_reason_is_refused(client, rep):
    deal = deal_in_stage(rep, Stage.OFFER)
    client.force_login(rep)
    response = post(client, deal, "lost/", {"note": "Keep me", "confirm": "1"})
    assert response.templates[0].name == "funnel/mark_lost.html"
    assert response.context["form"].errors == {"lost_reason": ["Choose why the deal was lost."]}
    assert "Keep me</textarea>" in response.content.decode()
    deal.refresh_from_db()
    assert deal.status == Status.OPEN


def test_a_lead_is_disqualified(client, rep):
    deal = deal_in_stage(rep, Stage.LEAD)
    client.force_login(rep)
    assert_saved(post(client, deal, "disqualify/"), deal, "disqualify")
    deal.refresh_from_db()
    assert (deal.status, deal.lost_stage, deal.lost_reason.code) == (
        Status.LOST,
        Stage.QUALIFICATION,
        "not_qualified",
    )


def test_a_manager_reopens_a_lost_deal(client, rep, manager):
    deal = deal_in_stage(rep, Stage.NEEDS)
    domain.mark_lost(deal, lost_reason("timing"), by=rep)
    client.force_login(manager)
    assert "Reopen the deal" in client.get(f"/deals/{deal.pk}/").content.decode()
    assert_saved(post(client, deal, "reopen/"), deal, "reopen")
    deal.refresh_from_db()
    assert (deal.status, deal.stage) == (Status.OPEN, Stage.NEEDS)
    assert events(deal)[-2:] == [("lost", "needs"), ("reopened", "needs")]


def test_a_rep_cannot_reopen(client, rep):
    deal = deal_in_stage(rep, Stage.NEEDS)
    domain.mark_lost(deal, lost_reason("timing"), by=rep)
    client.force_login(rep)
    assert "Reopen the deal" not in client.get(f"/deals/{deal.pk}/").content.decode()
    assert post(client, deal, "reopen/").status_code == 404
    deal.refresh_from_db()
    assert deal.status == Status.LOST


# A stale page -----------------------------------------------------------------------------


def test_a_stale_form_shows_the_conflict_and_the_current_data_and_overwrites_nothing(
    client, rep, manager
):
    deal = deal_in_stage(rep, Stage.QUALIFICATION)
    seen = deal.version
    domain.update_deal(deal, heard_from="Manager's answer", by=manager)
    client.force_login(rep)
    response = post(client, deal, "qualification/", {"heard_from": "Rep's answer"}, version=seen)
    assert response.status_code == 409
    html = response.content.decode()
    assert "Someone else changed this deal in the meantime." in html
    assert "<li>How they heard of us: Rep&#x27;s answer</li>" in html
    assert 'value="Manager&#x27;s answer"' in html  # the form shows the current data
    deal.refresh_from_db()
    assert deal.heard_from == "Manager's answer"


def test_a_move_form_arriving_after_another_move_gets_the_conflict_page(client, rep, manager):
    deal = deal_in_stage(rep, Stage.LEAD)
    form = {"to_stage": "qualification", "version": deal.version}
    client.force_login(rep)
    assert client.post(f"/deals/{deal.pk}/move/", form).status_code == 302
    client.force_login(manager)
    late = client.post(f"/deals/{deal.pk}/move/", form)
    assert late.status_code == 409
    html = late.content.decode()
    assert "Someone else changed this deal in the meantime." in html
    assert "<li>Move to: Qualification</li>" in html
    assert "Select a valid choice" not in html
    deal.refresh_from_db()
    assert (deal.stage, deal.version) == (Stage.QUALIFICATION, 2)
    assert events(deal) == [("created", "lead"), ("moved", "qualification")]


def test_a_lost_form_from_a_stale_page_gets_the_conflict_before_the_confirmation(
    client, rep, manager
):
    deal = deal_in_stage(rep, Stage.NEEDS)
    seen = deal.version
    domain.move_forward(deal, Stage.OFFER, by=manager)
    client.force_login(rep)
    response = post(client, deal, "lost/", {"lost_reason": lost_reason("price").pk}, version=seen)
    assert response.status_code == 409
    assert "Someone else changed this deal in the meantime." in response.content.decode()
    deal.refresh_from_db()
    assert (deal.stage, deal.status) == (Stage.OFFER, Status.OPEN)


@pytest.mark.parametrize(
    ("stage", "path", "data"),
    [
        (Stage.LEAD, "move/", {"to_stage": "qualification"}),
        (Stage.LEAD, "details/", {"title": "Changed"}),
        (Stage.NEEDS, "needs/", {"problems": "Changed"}),
        (Stage.NEEDS, "activities/", {"kind": "call", "held_at": "2020-01-01T10:00"}),
        (Stage.OFFER, "offers/", {"value": "1"}),
        (Stage.NEGOTIATION, "terms/", {"agreed_value": "1"}),
        (Stage.NEGOTIATION, "rounds/", {"held_on": "2020-01-01", "proposed_value": "1"}),
        (
            Stage.CLOSING,
            "closing/",
            {"document_type": "contract", "issue_date": "2020-01-01", "final_value": "1"},
        ),
        (Stage.LEAD, "disqualify/", {}),
        (Stage.NEEDS, "lost/", {"lost_reason": "1", "confirm": "1"}),
    ],
)
def test_every_change_from_a_stale_page_is_refused(client, rep, manager, stage, path, data):
    deal = deal_in_stage(rep, stage, start_days_ago=10)
    seen = deal.version
    domain.update_deal(deal, expected_close_date=datetime.date(2031, 1, 1), by=manager)
    before = Deal.objects.values().get(pk=deal.pk)
    rows = (StageHistory.objects.count(), Activity.objects.count(), Offer.objects.count())
    if path == "lost/":
        data = {**data, "lost_reason": lost_reason("price").pk}
    client.force_login(rep)
    response = post(client, deal, path, data, version=seen)
    assert response.status_code == 409
    assert "Someone else changed this deal in the meantime." in response.content.decode()
    assert Deal.objects.values().get(pk=deal.pk) == before
    assert (StageHistory.objects.count(), Activity.objects.count(), Offer.objects.count()) == rows
    assert not ClosingDocument.objects.exists()
