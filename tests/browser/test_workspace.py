"""The rep workspace in a real browser: the whole funnel through its forms."""

import re

from django.utils import timezone

from funnel.models import Channel, Deal, LostReason, StageHistory
from funnel.stages import Stage, Status
from tests.factories import deal_in_stage

SHOTS = None  # a folder path here saves screenshots while developing


def _shot(page, name):
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def _move_forward(page):
    page.click("#move button[type=submit]")
    page.wait_for_load_state()


def test_a_rep_takes_a_new_lead_through_all_six_stages_to_won(page, sign_in, rep):
    Channel.objects.create(name="Webinar")
    today = timezone.localdate().isoformat()
    sign_in(rep)
    page.click("nav >> text=New lead")
    page.fill("#id_title", "ERP rollout")
    page.fill("#id_company_name", "Acme sp. z o.o.")
    page.fill("#id_contact_last_name", "Nowak")
    page.select_option("#id_channel", label="Webinar")
    page.fill("#id_estimated_value", "12500.50")
    page.click("form button[type=submit]:has-text('Record lead')")
    page.wait_for_load_state()
    _shot(page, "1-lead")
    assert page.locator(".stage-step.is-current").inner_text().startswith("Lead")

    _move_forward(page)
    page.fill("#qualification #id_heard_from", "Conference")
    page.fill("#qualification #id_qualification_score", "80")
    page.click("#qualification button[type=submit]")
    page.wait_for_load_state()
    _shot(page, "2-qualification")
    _move_forward(page)

    page.fill("#needs #id_problems", "Manual invoicing")
    page.click("#needs button[type=submit]")
    page.wait_for_load_state()
    page.select_option("#activity #id_kind", "meeting")
    page.fill("#activity #id_outcome", "Audit booked")
    page.click("#activity button[type=submit]")
    page.wait_for_load_state()
    _shot(page, "3-needs")
    _move_forward(page)

    page.fill("#offer #id_value", "12000")
    page.click("#offer button[type=submit]")
    page.wait_for_load_state()
    page.click("tr[data-offer='1'] button:has-text('Mark sent')")
    page.wait_for_load_state()
    _shot(page, "4-offer")
    _move_forward(page)

    page.fill("#round #id_held_on", today)
    page.fill("#round #id_proposed_value", "11000")
    page.fill("#round #id_discount_pct", "8.33")
    page.click("#round button[type=submit]")
    page.wait_for_load_state()
    page.fill("#terms #id_agreed_value", "11000")
    page.fill("#terms #id_discount_pct", "8.33")
    page.click("#terms button[type=submit]")
    page.wait_for_load_state()
    _shot(page, "5-negotiation")
    _move_forward(page)

    page.select_option("#closing #id_document_type", "contract")
    page.fill("#closing #id_number", "U/2025/7")
    page.fill("#closing #id_final_value", "11000")
    page.fill("#closing #id_signed_on", today)
    page.click("#closing button[type=submit]")
    page.wait_for_load_state()
    _shot(page, "6-won")

    assert page.locator("[data-status]").inner_text() == "Won"
    deal = Deal.objects.get()
    assert (deal.status, deal.stage, deal.owner, str(deal.agreed_value)) == (
        Status.WON,
        Stage.CLOSING,
        rep,
        "11000.00",
    )
    assert list(StageHistory.objects.filter(deal=deal).values_list("event", "to_stage")) == [
        ("created", "lead"),
        ("moved", "qualification"),
        ("moved", "needs"),
        ("moved", "offer"),
        ("moved", "negotiation"),
        ("moved", "closing"),
        ("won", "closing"),
    ]
    assert deal.heard_from == "Conference"
    assert deal.activities.get().outcome == "Audit booked"


def test_a_rep_marks_a_deal_lost_with_a_reason_after_confirming(page, sign_in, rep):
    # The live server's database is flushed between tests: the migration's rows too.
    LostReason.objects.get_or_create(
        code="price", defaults={"name_en": "Price", "name_pl": "Cena", "position": 1}
    )
    deal = deal_in_stage(rep, Stage.NEEDS)
    sign_in(rep)
    page.goto(f"/deals/{deal.pk}/")
    page.click("text=Mark lost")
    page.select_option("#id_lost_reason", label="Price")
    page.fill("#id_note", "Went with a cheaper tool")
    page.click("button:has-text('Continue')")
    page.wait_for_load_state()
    _shot(page, "lost-confirm")
    assert "Mark this deal lost?" in page.locator("h1").inner_text()
    deal.refresh_from_db()
    assert deal.status == Status.OPEN  # nothing happens before the confirmation

    page.click("button:has-text('Yes, mark it lost')")
    page.wait_for_load_state()
    assert page.locator("[data-status]").inner_text() == "Lost"
    deal.refresh_from_db()
    assert (deal.status, deal.lost_stage, deal.lost_reason.code, deal.lost_note) == (
        Status.LOST,
        Stage.NEEDS,
        "price",
        "Went with a cheaper tool",
    )


def test_a_rep_cannot_open_another_reps_deal(page, sign_in, rep, outsider):
    deal = deal_in_stage(outsider, Stage.OFFER, title="Secret deal")
    sign_in(rep)
    response = page.goto(f"/deals/{deal.pk}/")
    assert response.status == 404
    assert "Secret deal" not in page.content()
    page.goto("/")
    assert page.locator("[data-deal]").count() == 0


def test_the_polish_interface_shows_polish_labels(page, sign_in, rep):
    deal = deal_in_stage(rep, Stage.QUALIFICATION)
    sign_in(rep)
    page.click(".language-switcher button[value=pl]")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Mój lejek"
    columns = page.locator(".board-column h2").all_inner_texts()
    assert [re.sub(r"\s*\d+$", "", c) for c in columns] == [
        "Lead",
        "Kwalifikacja",
        "Badanie potrzeb",
        "Ofertowanie",
        "Negocjacje",
        "Faktura pro forma lub umowa",
    ]
    page.goto(f"/deals/{deal.pk}/")
    assert page.locator("a:has-text('Oznacz jako utraconą')").count() == 1
    assert page.locator("label[for=id_heard_from]").inner_text() == "Skąd się dowiedział"
    _shot(page, "pl")
