"""The activities import (``import_activities``): calls, e-mails, meetings and audits of
deals imported before, found by their external_id, logged through the domain; bad rows
reported by line and column, a re-import that adds nothing, the KPIs that count
activities, the export's round trip, and a manager's scope on the page and the API."""

import csv
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from funnel import importing
from funnel.models import Activity, Deal
from kpis.models import DirtyDay, KpiSnapshot
from tests.factories import deal_in_stage
from tests.funnel.test_import import (  # noqa: F401 (setup: a fixture)
    CLEAN,
    at,
    csv_text,
    d,
    import_text,
    setup,
)
from tests.imports.test_upload import signed_in, upload_file  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("setup")]

COLUMNS = ["deal", "kind", "held_at", "outcome", "notes", "by"]

#: Lines 2 to 5: on L-5 (needs from Jan 14, offer from Jan 15), L-3 (needs from Jan 9)
#: and L-7 (needs from Feb 12, offer from Feb 16).
ACTIVITIES = [
    {
        "deal": "L-5",
        "kind": "meeting",
        "held_at": "2026-01-14T10:00",
        "outcome": "Audit agreed",
        "by": "teammate",
    },
    {"deal": "L-5", "kind": "CALL", "held_at": "2026-01-15"},
    {"deal": "L-3", "kind": "email", "held_at": "2026-01-09T13:00", "notes": "=SUM(A1)"},
    {"deal": "L-7", "kind": "audit", "held_at": "2026-02-12T11:00", "by": "rep@example.com"},
]


def activities_text(*rows):
    return csv_text(*rows, columns=COLUMNS)


def logged():
    return sorted(
        Activity.objects.values_list(
            "deal__external_id", "kind", "held_at", "outcome", "notes", "by__username"
        )
    )


def month_value(code, month):
    row = KpiSnapshot.objects.get(
        kpi=code, grain="month", period_start=month, slice="company", breakdown=""
    )
    return row.value, row.numerator, row.denominator


EXPECTED = [
    ("L-3", "email", at(1, 9, 13), "", "=SUM(A1)", "rep"),
    ("L-5", "call", at(1, 15, 0), "", "", "rep"),
    ("L-5", "meeting", at(1, 14, 10), "Audit agreed", "", "teammate"),
    ("L-7", "audit", at(2, 12, 11), "", "", "rep"),
]


def test_the_command_logs_each_activity_on_its_deal_and_recomputes(rep, tmp_path):
    import_text(csv_text(*CLEAN))
    path = tmp_path / "activities.csv"
    path.write_text(activities_text(*ACTIVITIES), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()

    call_command("import_activities", str(path), "--by", "rep", stdout=out, stderr=err)

    assert err.getvalue() == ""
    lines = out.getvalue().splitlines()
    assert lines[:2] == [
        f"{path}: 4 activities created, 0 unchanged, 0 failed.",
        "Affected dates: 2026-01-09 to 2026-02-12.",
    ]
    assert lines[2].startswith("KPIs recomputed: ")
    assert logged() == EXPECTED
    deal = Deal.objects.get(external_id="L-5")
    assert deal.last_activity_at == at(1, 15, 0)
    # Fresh when the command returns: meetings, audits and calls held, and the deals
    # whose first one was in the month that went on to an offer.
    assert DirtyDay.objects.count() == 0
    assert month_value("needs_meetings", d(1, 1))[0] == 2
    assert month_value("needs_meetings", d(2, 1))[0] == 1
    assert month_value("meeting_conversion_pct", d(2, 1)) == (100, 1, 1)


def test_a_second_import_of_the_same_file_adds_nothing(rep):
    import_text(csv_text(*CLEAN))
    text = activities_text(*ACTIVITIES)
    importing.import_activities(io.StringIO(text), by=rep)

    again = importing.import_activities(io.StringIO(text), by=rep)

    assert (again.created, again.unchanged, again.failed) == (0, 4, 0)
    assert logged() == EXPECTED


BAD = [
    {"deal": "L-5", "kind": "meeting", "held_at": "2026-01-14T10:00"},  # line 2: good
    {"deal": "NOPE", "kind": "call", "held_at": "2026-01-14T10:00"},
    {"deal": "L-5", "kind": "visit", "held_at": "14.01.2026"},
    {"deal": "L-5", "kind": "call", "held_at": "2026-01-01T10:00"},  # line 5
    {"deal": "L-5", "kind": "call", "held_at": "2099-01-01T10:00"},
    {"deal": "L-5", "kind": "call", "held_at": "2026-01-16T10:00", "by": "ghost"},
    {"deal": "L-5", "kind": "meeting", "held_at": "2026-01-14T10:00"},
    {"deal": "L-5", "kind": "", "held_at": "", "outcome": "No date"},
    {"deal": "L-5", "kind": "call", "held_at": "2026-01-16T10:00", "outcome": "x" * 201},
]
BAD_ERRORS = [
    (3, "deal: No deal has the external_id 'NOPE'."),
    (
        4,
        "kind: 'visit' is not one of call, email, meeting, audit.; held_at: '14.01.2026' is "
        "not an ISO 8601 date or timestamp (e.g. 2025-03-14T09:30).",
    ),
    (5, "held_at: An activity cannot precede the lead's creation."),
    (6, "held_at: A moment in the future cannot be recorded."),
    (7, "by: Unknown user 'ghost'."),
    (8, "held_at: the same meeting of deal 'L-5' at this moment appears again (line 2)."),
    (9, "kind: Required.; held_at: Required."),
    (10, "outcome: Ensure this value has at most 200 characters (it has 201)."),
]


def test_bad_rows_are_reported_by_line_and_column_and_nothing_is_logged(rep, tmp_path):
    import_text(csv_text(*CLEAN))
    DirtyDay.objects.all().delete()
    path = tmp_path / "bad.csv"
    path.write_text(activities_text(*BAD), encoding="utf-8")
    err = io.StringIO()

    with pytest.raises(CommandError) as excinfo:
        call_command("import_activities", str(path), stdout=io.StringIO(), stderr=err)

    assert err.getvalue().splitlines() == [f"line {n}: {m}" for n, m in BAD_ERRORS]
    assert str(excinfo.value) == (
        f"{path}: nothing imported: 8 of 9 rows failed (1 valid, 0 unchanged). "
        "Use --valid-only to import the valid rows."
    )
    assert not Activity.objects.exists()
    assert not DirtyDay.objects.exists()

    kept = importing.import_activities(io.StringIO(activities_text(*BAD)), valid_only=True)
    assert kept.errors == BAD_ERRORS
    assert (kept.created, kept.failed) == (1, 8)
    assert Activity.objects.get().held_at == at(1, 14, 10)


def test_export_then_import_reproduces_every_activity(rep, tmp_path):
    import_text(csv_text(*CLEAN))
    importing.import_activities(io.StringIO(activities_text(*ACTIVITIES)), by=rep)
    path = tmp_path / "out.csv"
    out = io.StringIO()

    call_command("export_activities", str(path), stdout=out)

    assert out.getvalue() == f"{path}: 4 activities exported.\n"
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0] == {
        "deal": "L-3",
        "kind": "email",
        "held_at": "2026-01-09T13:00:00+01:00",
        "outcome": "",
        "notes": "'=SUM(A1)",  # neutralised for spreadsheets, restored on import
        "by": "rep",
    }
    # Only an owner's deals' activities, with --owner (L-3 is the teammate's).
    call_command("export_activities", str(path), "--owner", "teammate", stdout=out)
    assert out.getvalue().splitlines()[-1] == f"{path}: 1 activities exported."
    call_command("export_activities", str(path), stdout=io.StringIO())
    Activity.objects.all().delete()
    result = importing.import_activities(path)
    assert (result.created, result.failed) == (4, 0)
    assert logged() == EXPECTED


def test_a_manager_imports_onto_the_deals_they_can_see_only(signed_in, manager, outsider):  # noqa: F811
    theirs = deal_in_stage(outsider, "lead", title="Theirs")
    theirs.external_id = "X-1"
    theirs.save(update_fields=["external_id"])
    import_text(csv_text(*CLEAN))
    client = signed_in(manager)
    text = activities_text(
        {"deal": "L-5", "kind": "call", "held_at": "2026-01-16T10:00"},
        {"deal": "X-1", "kind": "call", "held_at": "2026-01-16T10:00"},
        {"deal": "L-5", "kind": "call", "held_at": "2026-01-17T10:00", "by": "outsider"},
    )

    preview = client.post(
        reverse("imports:upload"), {"kind": "activities", "file": upload_file(text)}
    )

    report = preview.context["report"]
    assert report["errors"] == [
        {"line": 3, "message": "deal: No deal you can see has the external_id 'X-1'."},
        {
            "line": 4,
            "message": "by: 'outsider' is not one of the people you lead (only an admin can "
            "import deals for anyone, or create users).",
        },
    ]
    assert preview.context["rows"][0]["cells"] == ["L-5", "call", "2026-01-16T10:00", "", ""]
    assert not Activity.objects.exists()
    # An activities file creates nothing: its options name none of that.
    page = preview.content.decode()
    assert "what is missing" not in page
    assert "all or nothing" in page
    deals = client.post(reverse("imports:upload"), {"kind": "deals", "file": upload_file(text)})
    assert "report what is missing" in deals.content.decode()


def test_the_api_imports_activities_for_managers_only(api, manager, rep):
    import_text(csv_text(*CLEAN))
    text = activities_text(*ACTIVITIES[:2])
    url = reverse("api:import-activities")
    refused = api.as_user(rep).post(url, {"file": upload_file(text)}, format="multipart")
    assert refused.status_code == 403

    done = api.as_user(manager).post(url, {"file": upload_file(text)}, format="multipart")

    assert done.status_code == 200
    assert (done.json()["kind"], done.json()["created"]) == ("activities", 2)
    # Without ``by`` the importing manager logged it.
    assert logged() == [
        ("L-5", "call", at(1, 15, 0), "", "", "manager"),
        ("L-5", "meeting", at(1, 14, 10), "Audit agreed", "", "teammate"),
    ]
