"""The import page and endpoint: a dry run that previews without writing, bad rows with
their exact lines, a confirmation that imports the kept upload once, re-import without
duplicates, a manager's owner scope, and no access for reps."""

import csv
import io
from pathlib import Path

import pytest
from django.urls import reverse

from funnel.models import Channel, Deal, MarketingSpend
from funnel.stages import Stage, Status
from imports.views import SESSION_KEY
from tests.factories import PASSWORD, deal_in_stage, make_deal

pytestmark = pytest.mark.django_db

GOOD = """external_id,title,company,owner,lead_at,qualification_at,needs_at,status,stage
A-1,Alpha,Acme,rep,2025-01-10T09:00,2025-01-12T09:00,,open,qualification
A-2,Beta,Beta Sp,teammate,2025-02-01,,,,
"""
#: Line 4: an unknown owner; line 6 (after a blank line 5): a date that is no date.
BAD = """external_id,title,company,owner,lead_at
B-1,Good,Acme,rep,2025-01-10
B-2,Nobody's,Acme,nobody,2025-01-11

B-3,Bad date,Acme,rep,10/01/2025
"""
SPEND = "channel,month,amount,currency\nWeb,2025-01,1000.00,PLN\n"


def upload_file(content, name="deals.csv"):
    file = io.BytesIO(content.encode())
    file.name = name
    return file


@pytest.fixture
def signed_in(client):
    def sign_in(user):
        assert client.login(username=user.username, password=PASSWORD)
        return client

    return sign_in


def dry_run(client, content, **options):
    data = {"kind": "deals", "file": upload_file(content), **options}
    return client.post(reverse("imports:upload"), data)


# Access -------------------------------------------------------------------------------


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get(reverse("imports:upload"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_rep_may_not_import_or_export(signed_in, rep):
    client = signed_in(rep)
    assert client.get(reverse("imports:upload")).status_code == 403
    assert dry_run(client, GOOD).status_code == 403
    assert client.post(reverse("imports:confirm"), {"token": "x"}).status_code == 403
    assert client.get(reverse("imports:export")).status_code == 403
    assert not Deal.objects.exists()


def test_the_page_offers_the_options(signed_in, manager):
    response = signed_in(manager).get(reverse("imports:upload"))
    assert response.status_code == 200
    html = response.content.decode()
    for name in ('name="kind"', 'name="file"', 'name="create_missing"', 'name="valid_only"'):
        assert name in html
    assert "<script>" not in html and "style=" not in html


# Dry run and confirmation -------------------------------------------------------------


def test_dry_run_previews_and_writes_nothing(signed_in, manager, rep, teammate):
    response = dry_run(signed_in(manager), GOOD)
    assert response.status_code == 200
    report = response.context["report"]
    assert (report["created"], report["failed"], report["rejected"]) == (2, 0, False)
    assert [(r["line"], r["outcome"]) for r in response.context["rows"]] == [
        (2, "created"),
        (3, "created"),
    ]
    assert response.context["rows"][0]["cells"][:4] == ["A-1", "Alpha", "Acme", "rep"]
    assert b"Import 2 rows" in response.content
    assert not Deal.objects.exists()


def test_bad_rows_are_listed_with_their_exact_lines(signed_in, manager, rep):
    response = dry_run(signed_in(manager), BAD)
    report = response.context["report"]
    assert [e["line"] for e in report["errors"]] == [3, 5]
    assert report["errors"][0]["message"].startswith("owner: 'nobody' is not one of the people")
    assert report["errors"][1]["message"].startswith("lead_at: '10/01/2025' is not an ISO 8601")
    assert (report["rejected"], report["valid"], report["failed"]) == (True, 1, 2)
    assert [(r["line"], r["outcome"]) for r in response.context["rows"]] == [
        (2, "created"),
        (3, "failed"),
        (5, "failed"),
    ]
    html = response.content.decode()
    assert "Import the 1 valid row only" in html
    assert "Import 1 row" not in html
    assert not Deal.objects.exists()


def test_confirm_imports_the_kept_upload_once(signed_in, manager, rep, teammate):
    client = signed_in(manager)
    preview = dry_run(client, GOOD)
    token = preview.context["token"]
    path = Path(client.session[SESSION_KEY][token]["path"])
    assert path.is_file()
    response = client.post(reverse("imports:confirm"), {"token": token})
    assert response.status_code == 200
    assert response.context["report"]["created"] == 2
    alpha = Deal.objects.get(external_id="A-1")
    assert (alpha.owner, alpha.stage, alpha.status, alpha.created_by) == (
        rep,
        Stage.QUALIFICATION,
        Status.OPEN,
        manager,
    )
    assert Deal.objects.get(external_id="A-2").owner == teammate
    assert not path.exists()
    assert token not in client.session[SESSION_KEY]
    again = client.post(reverse("imports:confirm"), {"token": token}, follow=True)
    assert "no longer waiting" in again.content.decode()
    assert Deal.objects.count() == 2


def test_reimporting_the_same_file_creates_no_duplicates(signed_in, manager, rep, teammate):
    client = signed_in(manager)
    client.post(reverse("imports:confirm"), {"token": dry_run(client, GOOD).context["token"]})
    second = dry_run(client, GOOD)
    assert [(r["line"], r["outcome"]) for r in second.context["rows"]] == [
        (2, "unchanged"),
        (3, "unchanged"),
    ]
    result = client.post(reverse("imports:confirm"), {"token": second.context["token"]})
    assert (result.context["report"]["created"], result.context["report"]["unchanged"]) == (0, 2)
    assert Deal.objects.count() == 2


def test_all_or_nothing_can_become_valid_rows_only_at_confirmation(signed_in, manager, rep):
    client = signed_in(manager)
    token = dry_run(client, BAD).context["token"]
    response = client.post(reverse("imports:confirm"), {"token": token, "valid_only": "1"})
    assert response.context["report"]["created"] == 1
    assert list(Deal.objects.values_list("external_id", flat=True)) == ["B-1"]


def test_valid_only_chosen_on_upload(signed_in, manager, rep):
    client = signed_in(manager)
    preview = dry_run(client, BAD, valid_only="on")
    assert (preview.context["report"]["rejected"], preview.context["report"]["created"]) == (
        False,
        1,
    )
    client.post(reverse("imports:confirm"), {"token": preview.context["token"]})
    assert Deal.objects.count() == 1


def test_discard_removes_the_upload(signed_in, manager, rep, teammate):
    client = signed_in(manager)
    token = dry_run(client, GOOD).context["token"]
    path = Path(client.session[SESSION_KEY][token]["path"])
    client.post(reverse("imports:confirm"), {"token": token, "discard": "1"})
    assert not path.exists()
    assert not Deal.objects.exists()


def test_a_manager_cannot_import_deals_for_another_team(signed_in, manager, outsider):
    content = "external_id,company,owner,lead_at\nX-1,Acme,outsider,2025-01-10\n"
    report = dry_run(signed_in(manager), content, create_missing="on").context["report"]
    assert report["errors"] == [
        {
            "line": 2,
            "message": "owner: 'outsider' is not one of the people you lead (only an admin "
            "can import deals for anyone, or create users).",
        }
    ]


def test_an_admin_creates_missing_owners_when_asked(signed_in, admin):
    content = "external_id,company,owner,lead_at\nX-1,Acme,newbie,2025-01-10\n"
    client = signed_in(admin)
    refused = dry_run(client, content).context["report"]
    assert refused["errors"] == [{"line": 2, "message": "owner: Unknown user 'newbie'."}]
    preview = dry_run(client, content, create_missing="on")
    assert preview.context["report"]["created_owners"] == ["newbie"]
    client.post(reverse("imports:confirm"), {"token": preview.context["token"]})
    assert Deal.objects.get().owner.username == "newbie"


def test_an_unreadable_file_is_reported(signed_in, manager):
    response = dry_run(signed_in(manager), "title;;;\n")
    assert response.context["report"]["errors"][0]["line"] == 1
    assert "cannot be read" in response.content.decode()


def test_spend_import(signed_in, manager):
    client = signed_in(manager)
    preview = client.post(
        reverse("imports:upload"),
        {"kind": "spend", "file": upload_file(SPEND), "create_missing": "on"},
    )
    assert [(r["line"], r["outcome"]) for r in preview.context["rows"]] == [(2, "created")]
    assert preview.context["rows"][0]["cells"] == ["Web", "2025-01", "1000.00", "PLN"]
    assert not MarketingSpend.objects.exists()
    client.post(reverse("imports:confirm"), {"token": preview.context["token"]})
    spend = MarketingSpend.objects.get()
    assert (spend.channel.name, str(spend.month), spend.amount_base) == ("Web", "2025-01-01", 1000)


def test_a_missing_file_is_a_form_error(signed_in, manager):
    response = signed_in(manager).post(reverse("imports:upload"), {"kind": "deals"})
    assert response.status_code == 200
    assert response.context["form"].errors == {"file": ["This field is required."]}


# Export -------------------------------------------------------------------------------


def test_export_downloads_the_visible_deals_in_the_import_format(signed_in, manager, rep, outsider):
    deal_in_stage(rep, Stage.NEEDS, title="Ours")
    make_deal(outsider, title="Theirs")
    response = signed_in(manager).get(reverse("imports:export"))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="lejek-deals-')
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["title"], r["owner"], r["stage"]) for r in rows] == [("Ours", "rep", "needs")]


def test_export_then_import_round_trips(signed_in, admin, rep):
    deal_in_stage(rep, Stage.NEGOTIATION, title="Round trip", external_id="RT-1")
    client = signed_in(admin)
    exported = client.get(reverse("imports:export")).content.decode()
    Deal.objects.all().delete()
    preview = dry_run(client, exported)
    assert preview.context["report"]["errors"] == []
    client.post(reverse("imports:confirm"), {"token": preview.context["token"]})
    again = client.get(reverse("imports:export")).content.decode()
    assert again == exported


# API door -----------------------------------------------------------------------------


def test_api_import_dry_run_reports_as_json(api, manager, rep):
    response = api.as_user(manager).post(
        reverse("api:import-deals"),
        {"file": upload_file(BAD), "dry_run": "true"},
        format="multipart",
    )
    assert response.status_code == 200
    body = response.json()
    assert [e["line"] for e in body["errors"]] == [3, 5]
    assert (body["dry_run"], body["rejected"], body["written"], body["valid"]) == (
        True,
        True,
        False,
        1,
    )
    assert body["rows"][0] == {
        "line": 2,
        "outcome": "created",
        "cells": {
            "external_id": "B-1",
            "title": "Good",
            "company": "Acme",
            "owner": "rep",
            "stage": "",
            "status": "",
            "lead_at": "2025-01-10",
        },
    }
    assert not Deal.objects.exists()


def test_api_import_writes_and_refuses_a_bad_file_with_422(api, manager, rep, teammate):
    client = api.as_user(manager)
    bad = client.post(reverse("api:import-deals"), {"file": upload_file(BAD)}, format="multipart")
    assert bad.status_code == 422
    assert bad.json()["rejected"] is True
    assert not Deal.objects.exists()
    good = client.post(reverse("api:import-deals"), {"file": upload_file(GOOD)}, format="multipart")
    assert good.status_code == 200
    assert (good.json()["created"], good.json()["written"]) == (2, True)
    again = client.post(
        reverse("api:import-deals"), {"file": upload_file(GOOD)}, format="multipart"
    )
    assert (again.json()["created"], again.json()["unchanged"]) == (0, 2)
    assert Deal.objects.count() == 2


def test_api_spend_import_and_rep_refusal(api, manager, rep):
    Channel.objects.create(name="Web")
    refused = api.as_user(rep).post(
        reverse("api:import-spend"), {"file": upload_file(SPEND)}, format="multipart"
    )
    assert refused.status_code == 403
    assert not MarketingSpend.objects.exists()
    done = api.as_user(manager).post(
        reverse("api:import-spend"), {"file": upload_file(SPEND)}, format="multipart"
    )
    assert done.status_code == 200
    assert done.json()["created"] == 1
    missing = api.as_user(manager).post(reverse("api:import-spend"), {}, format="multipart")
    assert missing.status_code == 400
    assert missing.json() == {"file": ["No file was submitted."]}


def test_api_export_is_for_managers(api, manager, rep):
    deal_in_stage(rep, Stage.LEAD, title="Mine")
    assert api.as_user(rep).get(reverse("api:export-deals")).status_code == 403
    response = api.as_user(manager).get(reverse("api:export-deals"))
    assert response.status_code == 200
    assert [r["title"] for r in csv.DictReader(io.StringIO(response.content.decode()))] == ["Mine"]
