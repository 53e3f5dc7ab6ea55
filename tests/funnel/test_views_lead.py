"""The new lead form: a lead recorded through create_deal, input kept when refused."""

from decimal import Decimal

import pytest

from funnel.models import Company, Contact, Deal, StageHistory
from tests.factories import ChannelFactory, CompanyFactory

pytestmark = pytest.mark.django_db


def form_data(**overrides):
    return {
        "title": "ERP rollout",
        "company_name": "Acme sp. z o.o.",
        "industry": "Food",
        "segment": "SMB",
        "contact_first_name": "Anna",
        "contact_last_name": "Nowak",
        "contact_email": "anna@acme.example",
        "currency": "pln",
        "estimated_value": "12500.50",
        **overrides,
    }


def test_a_rep_records_a_lead_with_a_new_company_and_contact(client, rep):
    web = ChannelFactory(name="Web")
    client.force_login(rep)
    response = client.post("/deals/new/", form_data(channel=web.pk, first_touch_on="2025-03-01"))
    deal = Deal.objects.get()
    assert (response.status_code, response["Location"]) == (302, f"/deals/{deal.pk}/")
    assert (deal.title, deal.owner, deal.created_by, deal.channel, deal.stage) == (
        "ERP rollout",
        rep,
        rep,
        web,
        "lead",
    )
    assert (deal.estimated_value, deal.currency, deal.industry, deal.segment) == (
        Decimal("12500.50"),
        "PLN",
        "Food",
        "SMB",
    )
    assert deal.first_touch_at.date().isoformat() == "2025-03-01"
    assert (deal.company.name, deal.company.industry) == ("Acme sp. z o.o.", "Food")
    assert (deal.contact.last_name, deal.contact.company) == ("Nowak", deal.company)
    assert list(StageHistory.objects.values_list("event", "to_stage", "by")) == [
        ("created", "lead", rep.pk)
    ]


def test_an_existing_company_is_reused_whatever_the_case(client, rep):
    company = CompanyFactory(name="Acme sp. z o.o.", segment="Enterprise")
    client.force_login(rep)
    client.post("/deals/new/", form_data(company_name="ACME SP. Z O.O.", segment=""))
    deal = Deal.objects.get()
    assert (deal.company, deal.segment, Company.objects.count()) == (company, "Enterprise", 1)


def test_invalid_input_keeps_what_was_typed_and_creates_nothing(client, rep):
    client.force_login(rep)
    data = form_data(estimated_value="-5", contact_last_name="", currency="ZLOTY")
    response = client.post("/deals/new/", data)
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "estimated_value": ["Ensure this value is greater than or equal to 0."],
        "currency": [
            "Ensure this value has at most 3 characters (it has 5).",
        ],
        "contact_last_name": ["Enter the contact's last name."],
    }
    html = response.content.decode()
    assert 'value="ERP rollout"' in html
    assert 'value="Acme sp. z o.o."' in html
    assert 'value="-5"' in html
    assert (Deal.objects.count(), Company.objects.count(), Contact.objects.count()) == (0, 0, 0)


def test_a_first_touch_in_the_future_is_refused(client, rep):
    client.force_login(rep)
    response = client.post("/deals/new/", form_data(first_touch_on="2999-01-01"))
    assert response.context["form"].errors == {
        "first_touch_on": ["This date cannot be in the future."]
    }


def test_a_manager_records_a_lead_for_a_rep_of_the_team_only(client, manager, rep, outsider):
    client.force_login(manager)
    response = client.post("/deals/new/", form_data(owner=outsider.pk))
    assert response.context["form"].errors == {
        "owner": ["Select a valid choice. That choice is not one of the available choices."]
    }
    client.post("/deals/new/", form_data(owner=rep.pk))
    deal = Deal.objects.get()
    assert (deal.owner, deal.created_by) == (rep, manager)


def test_a_rep_always_owns_the_leads_they_record(client, rep, teammate):
    client.force_login(rep)
    assert "owner" not in client.get("/deals/new/").context["form"].fields
    client.post("/deals/new/", form_data(owner=teammate.pk))
    assert Deal.objects.get().owner == rep
