"""Historical import and export (funnel/importing.py and its commands): every row is
replayed through the domain functions, errors name their line and column, a file is all
or nothing unless --valid-only, re-import is idempotent, and export -> import reproduces
the deals."""

import csv
import datetime
import io
import zoneinfo
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.models import Role, User
from funnel import domain, importing
from funnel.models import (
    Channel,
    ClosingDocument,
    Company,
    Deal,
    ExchangeRate,
    LostReason,
    MarketingSpend,
    NegotiationRound,
    Offer,
    StageHistory,
)
from funnel.stages import Stage
from kpis import company, reading, recompute
from kpis.models import DirtyDay, HourlyInputs, KpiSnapshot, MaturityHorizon
from kpis.periods import local_date
from tests.factories import lost_reason

pytestmark = pytest.mark.django_db

WARSAW = zoneinfo.ZoneInfo("Europe/Warsaw")
PL, EUR = "PLN", "EUR"


def at(month, day, hour=9, minute=0):
    """A local moment in 2026 (the organisation's time zone)."""
    return datetime.datetime(2026, month, day, hour, minute, tzinfo=WARSAW)


def d(month, day):
    return datetime.date(2026, month, day)


#: Not the export's order: a file's columns may come in any order.
HEADER = [
    "external_id",
    "title",
    "company",
    "industry",
    "segment",
    "channel",
    "owner",
    "currency",
    "estimated_value",
    "first_touch_at",
    "heard_from",
    "contact_prompt",
    "product_scope",
    "qualification_score",
    "expected_close_date",
    "lead_at",
    "qualification_at",
    "needs_at",
    "offer_at",
    "offer_value",
    "offer_sent_at",
    "offer_status",
    "negotiation_at",
    "negotiation_rounds",
    "agreed_value",
    "discount_pct",
    "closing_at",
    "document_type",
    "final_value",
    "status",
    "stage",
    "won_at",
    "lost_at",
    "lost_reason",
    "lost_stage",
]


def csv_text(*rows, columns=HEADER):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def import_text(text, **kw):
    return importing.import_deals(io.StringIO(text), **kw)


#: Ten deals: open at every stage (one skipped qualification and needs), won with a
#: contract (in EUR, after rounds and a discount) and with a pro-forma (negotiation
#: skipped), lost at qualification and at negotiation. Lines 2 to 11.
CLEAN = [
    {
        "external_id": "L-1",
        "title": "Alfa CRM",
        "company": "Alfa sp. z o.o.",
        "industry": "IT",
        "segment": "SMB",
        "channel": "Google Ads",
        "owner": "rep",
        "estimated_value": "1000",
        "first_touch_at": "2026-01-02",
        "lead_at": "2026-01-05T09:00",
        "status": "open",
        "stage": "lead",
    },
    {
        "external_id": "L-2",
        "company": "Beta S.A.",
        "channel": "referral",
        "owner": "rep@example.com",
        "estimated_value": "2 500,50",
        "heard_from": "Trade fair",
        "qualification_score": "0",
        "expected_close_date": "2026-05-29",
        "lead_at": "2026-01-05 10:00",
        "qualification_at": "2026-01-06",
        "status": "open",
        "stage": "qualification",
    },
    {
        "external_id": "L-3",
        "title": "Alfa ERP",
        "company": "alfa SP. Z O.O.",
        "owner": "teammate",
        "lead_at": "2026-01-07T10:00:00+01:00",
        "qualification_at": "2026-01-07T10:00:00+01:00",
        "needs_at": "2026-01-09T12:00",
        "stage": "needs",
    },
    {
        "external_id": "L-4",
        "company": "Gamma",
        "owner": "rep",
        "estimated_value": "5000",
        "lead_at": "2026-01-10T10:00",
        "offer_at": "2026-01-12T10:00",
        "offer_value": "5000",
        "offer_status": "draft",
        "status": "open",
        "stage": "offer",
    },
    {
        "external_id": "L-5",
        "company": "Delta",
        "owner": "rep",
        "estimated_value": "8000",
        "lead_at": "2026-01-12T09:00",
        "qualification_at": "2026-01-13T09:00",
        "needs_at": "2026-01-14T09:00",
        "offer_at": "2026-01-15T09:00",
        "offer_value": "8000",
        "offer_sent_at": "2026-01-16T15:00",
        "offer_status": "sent",
        "negotiation_at": "2026-01-20T11:00",
        "negotiation_rounds": "2",
        "status": "open",
        "stage": "negotiation",
    },
    {
        "external_id": "L-6",
        "company": "Epsilon",
        "owner": "rep",
        "estimated_value": "6500",
        "lead_at": "2026-02-02T09:00",
        "qualification_at": "2026-02-03T09:00",
        "needs_at": "2026-02-04T09:00",
        "offer_at": "2026-02-05T09:00",
        "offer_value": "6000",
        "offer_sent_at": "2026-02-06T09:00",
        "offer_status": "accepted",
        "negotiation_at": "2026-02-09T09:00",
        "closing_at": "2026-02-12T09:00",
        "document_type": "contract",
        "final_value": "6000",
        "status": "open",
        "stage": "closing",
    },
    {
        "external_id": "L-7",
        "company": "Zeta GmbH",
        "industry": "Manufacturing",
        "segment": "Enterprise",
        "channel": "Google Ads",
        "owner": "rep",
        "currency": "EUR",
        "estimated_value": "10000",
        "heard_from": "Trade fair",
        "contact_prompt": "=new plant",
        "product_scope": "CRM licences",
        "qualification_score": "80",
        "expected_close_date": "2026-03-10",
        "lead_at": "2026-02-10T09:00",
        "qualification_at": "2026-02-11T09:00",
        "needs_at": "2026-02-12T09:00",
        "offer_at": "2026-02-16T09:00",
        "offer_value": "10000",
        "offer_sent_at": "2026-02-17T09:00",
        "offer_status": "sent",
        "negotiation_at": "2026-02-20T09:00",
        "negotiation_rounds": "1",
        "agreed_value": "9000",
        "discount_pct": "10",
        "closing_at": "2026-03-02T09:00",
        "document_type": "contract",
        "final_value": "9000",
        "status": "won",
        "won_at": "2026-03-05T09:00",
    },
    {
        "external_id": "L-8",
        "company": "Eta",
        "owner": "teammate",
        "estimated_value": "4500",
        "lead_at": "2026-03-02T09:00",
        "qualification_at": "2026-03-03T09:00",
        "needs_at": "2026-03-04T09:00",
        "offer_at": "2026-03-05T09:00",
        "offer_value": "4000",
        "offer_sent_at": "2026-03-06T09:00",
        "offer_status": "sent",
        "closing_at": "2026-03-09T09:00",
        "agreed_value": "4000",
        "document_type": "proforma",
        "final_value": "4000",
        "status": "won",
        "stage": "closing",
        "won_at": "2026-03-20T09:00",
    },
    {
        "external_id": "L-9",
        "company": "Theta",
        "owner": "rep",
        "lead_at": "2026-03-10T09:00",
        "qualification_at": "2026-03-11T09:00",
        "status": "lost",
        "lost_at": "2026-03-12T09:00",
        "lost_reason": "Not qualified",
        "lost_stage": "qualification",
    },
    {
        "external_id": "L-10",
        "company": "Iota",
        "owner": "rep",
        "estimated_value": "7000",
        "lead_at": "2026-04-01T09:00",
        "qualification_at": "2026-04-02T09:00",
        "needs_at": "2026-04-03T09:00",
        "offer_at": "2026-04-06T09:00",
        "offer_value": "7000",
        "offer_sent_at": "2026-04-07T09:00",
        "offer_status": "rejected",
        "negotiation_at": "2026-04-09T09:00",
        "negotiation_rounds": "1",
        "status": "LOST",
        "lost_at": "2026-04-15T09:00",
        "lost_reason": "cena",
        "lost_stage": "negotiation",
    },
]


@pytest.fixture
def setup(rep, teammate):
    google = Channel.objects.create(name="Google Ads")
    referral = Channel.objects.create(name="Referral")
    ExchangeRate.objects.create(currency=EUR, date=d(1, 1), rate=Decimal("4.25"))
    ExchangeRate.objects.create(currency=EUR, date=d(3, 1), rate=Decimal("4.30"))
    return {"google": google, "referral": referral}


# What a deal looks like -----------------------------------------------------------------


def stamps(deal):
    return tuple(deal.stamp(stage) for stage in Stage)


def history(deal):
    return list(
        StageHistory.objects.filter(deal=deal)
        .order_by("at", "id")
        .values_list("event", "from_stage", "to_stage", "at", "lost_reason__code")
    )


def offers(deal):
    return list(
        Offer.objects.filter(deal=deal)
        .order_by("version")
        .values_list(
            "version", "status", "value", "value_base", "prep_started_at", "sent_at", "responded_at"
        )
    )


def rounds(deal):
    return list(
        NegotiationRound.objects.filter(deal=deal)
        .order_by("number")
        .values_list("number", "held_at", "proposed_value", "proposed_value_base", "discount_pct")
    )


def document(deal):
    return (
        ClosingDocument.objects.filter(deal=deal)
        .values_list(
            "document_type", "issue_date", "final_value", "final_value_base", "signed_at", "paid_at"
        )
        .first()
    )


def company_reading(code, month):
    """(value, numerator, denominator) of ``code``'s stored company total for ``month``."""
    row = KpiSnapshot.objects.get(
        kpi=code, grain="month", period_start=month, slice="company", breakdown=""
    )
    return row.value, row.numerator, row.denominator


def described(deal):
    """Everything an import sets on a deal, its rows included (no ids)."""
    deal.refresh_from_db()
    return {
        "title": deal.title,
        "company": deal.company.name,
        "industry": deal.industry,
        "segment": deal.segment,
        "channel": deal.channel.name if deal.channel else None,
        "owner": deal.owner.username,
        "currency": deal.currency,
        "estimated": (deal.estimated_value, deal.estimated_value_base),
        "first_touch_at": deal.first_touch_at,
        "details": (
            deal.heard_from,
            deal.contact_prompt,
            deal.product_scope,
            deal.qualification_score,
            deal.expected_close_date,
        ),
        "stage": deal.stage,
        "status": deal.status,
        "stamps": stamps(deal),
        "won_at": deal.won_at,
        "lost": (deal.lost_at, deal.lost_reason and deal.lost_reason.code, deal.lost_stage),
        "terms": (deal.agreed_value, deal.agreed_value_base, deal.agreed_at, deal.discount_pct),
        "current_value_base": deal.current_value_base,
        "last_event_at": deal.last_event_at,
        "history": history(deal),
        "offers": offers(deal),
        "rounds": rounds(deal),
        "document": document(deal),
    }


def all_described():
    return {deal.external_id: described(deal) for deal in Deal.objects.order_by("external_id")}


def deal(external_id):
    return Deal.objects.get(external_id=external_id)


# A clean file ------------------------------------------------------------------------------


def test_a_clean_file_imports_every_deal_through_the_transitions(setup, rep, teammate, tmp_path):
    path = tmp_path / "deals.csv"
    path.write_text(csv_text(*CLEAN), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()

    call_command("import_deals", str(path), "--by", "rep", stdout=out, stderr=err)

    assert err.getvalue() == ""
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        f"{path}: 10 deals created, 0 unchanged, 0 failed.",
        "New companies created: Alfa sp. z o.o., Beta S.A., Gamma, Delta, Epsilon, "
        "Zeta GmbH, Eta, Theta, Iota.",
        "Affected dates: 2026-01-05 to 2026-04-15.",
    ]
    assert lines[3].startswith("KPIs recomputed: ")
    assert Deal.objects.count() == 10
    assert set(Deal.objects.values_list("created_by__username", flat=True)) == {"rep"}
    # The KPIs are fresh when the command returns.
    assert DirtyDay.objects.count() == 0
    leads = dict(
        KpiSnapshot.objects.filter(
            kpi="leads", grain="month", slice="company", breakdown=""
        ).values_list("period_start", "value")
    )
    assert [leads[d(m, 1)] for m in (1, 2, 3, 4)] == [5, 2, 2, 1]
    won = KpiSnapshot.objects.get(
        kpi="won_value", grain="month", period_start=d(3, 1), slice="company", breakdown=""
    )
    assert won.value == Decimal("38700") + Decimal("4000")

    alfa = Company.objects.get(name="Alfa sp. z o.o.")
    assert (alfa.industry, alfa.segment) == ("IT", "SMB")
    assert Company.objects.get(name="Zeta GmbH").industry == "Manufacturing"

    created = ("created", None, "lead")
    assert described(deal("L-1")) == {
        "title": "Alfa CRM",
        "company": "Alfa sp. z o.o.",
        "industry": "IT",
        "segment": "SMB",
        "channel": "Google Ads",
        "owner": "rep",
        "currency": PL,
        "estimated": (Decimal("1000.00"), Decimal("1000.00")),
        "first_touch_at": at(1, 2, 0),
        "details": ("", "", "", None, None),
        "stage": "lead",
        "status": "open",
        "stamps": (at(1, 5), None, None, None, None, None),
        "won_at": None,
        "lost": (None, None, None),
        "terms": (None, None, None, None),
        "current_value_base": Decimal("1000.00"),
        "last_event_at": at(1, 5),
        "history": [(*created, at(1, 5), None)],
        "offers": [],
        "rounds": [],
        "document": None,
    }

    # Title defaults to the company; owner matched by e-mail, channel case-insensitively;
    # a decimal comma; a naive timestamp and a date are local time.
    l2 = described(deal("L-2"))
    assert (l2["title"], l2["owner"], l2["channel"]) == ("Beta S.A.", "rep", "Referral")
    assert l2["estimated"] == (Decimal("2500.50"), Decimal("2500.50"))
    assert l2["stamps"] == (at(1, 5, 10), at(1, 6, 0), None, None, None, None)
    assert l2["details"] == ("Trade fair", "", "", 0, d(5, 29))
    assert l2["history"] == [
        (*created, at(1, 5, 10), None),
        ("moved", "lead", "qualification", at(1, 6, 0), None),
    ]

    # A lead qualified the moment it was recorded: a stay of no length, not a skip.
    l3 = described(deal("L-3"))
    assert (l3["company"], l3["stage"], l3["status"]) == ("Alfa sp. z o.o.", "needs", "open")
    assert l3["stamps"] == (at(1, 7, 10), at(1, 7, 10), at(1, 9, 12), None, None, None)
    assert l3["history"] == [
        (*created, at(1, 7, 10), None),
        ("moved", "lead", "qualification", at(1, 7, 10), None),
        ("moved", "qualification", "needs", at(1, 9, 12), None),
    ]

    # Empty qualification_at and needs_at before offer_at: both skipped.
    l4 = described(deal("L-4"))
    assert l4["stamps"] == (at(1, 10, 10), *[at(1, 12, 10)] * 3, None, None)
    assert l4["history"] == [
        (*created, at(1, 10, 10), None),
        ("skipped", "lead", "qualification", at(1, 12, 10), None),
        ("skipped", "qualification", "needs", at(1, 12, 10), None),
        ("moved", "needs", "offer", at(1, 12, 10), None),
    ]
    assert l4["offers"] == [
        (1, "draft", Decimal("5000.00"), Decimal("5000.00"), at(1, 12, 10), None, None)
    ]

    l5 = described(deal("L-5"))
    assert (l5["stage"], l5["status"]) == ("negotiation", "open")
    assert l5["stamps"] == (at(1, 12), at(1, 13), at(1, 14), at(1, 15), at(1, 20, 11), None)
    assert l5["offers"] == [
        (1, "sent", Decimal("8000.00"), Decimal("8000.00"), at(1, 15), at(1, 16, 15), None)
    ]
    assert l5["rounds"] == [
        (1, at(1, 20, 11), Decimal("8000.00"), Decimal("8000.00"), Decimal("0.00")),
        (2, at(1, 20, 11), Decimal("8000.00"), Decimal("8000.00"), Decimal("0.00")),
    ]
    assert l5["current_value_base"] == Decimal("8000.00")

    # Accepted at the negotiation's start: the offer's value is the agreed value.
    l6 = described(deal("L-6"))
    assert (l6["stage"], l6["status"]) == ("closing", "open")
    assert l6["offers"] == [
        (1, "accepted", Decimal("6000.00"), Decimal("6000.00"), at(2, 5), at(2, 6), at(2, 9))
    ]
    assert l6["terms"] == (Decimal("6000.00"), Decimal("6000.00"), at(2, 9), None)
    assert l6["document"] == (
        "contract",
        d(2, 12),
        Decimal("6000.00"),
        Decimal("6000.00"),
        None,
        None,
    )

    # Won in EUR: every amount converted at the rate of its own event's date.
    l7 = described(deal("L-7"))
    assert (l7["stage"], l7["status"], l7["currency"]) == ("closing", "won", EUR)
    assert (l7["industry"], l7["segment"]) == ("Manufacturing", "Enterprise")
    # The qualification answers and the expected close date; a formula-like answer kept.
    assert l7["details"] == ("Trade fair", "=new plant", "CRM licences", 80, d(3, 10))
    assert l7["estimated"] == (Decimal("10000.00"), Decimal("42500.00"))
    assert l7["stamps"] == (at(2, 10), at(2, 11), at(2, 12), at(2, 16), at(2, 20), at(3, 2))
    assert l7["won_at"] == at(3, 5)
    assert l7["offers"] == [
        (1, "sent", Decimal("10000.00"), Decimal("42500.00"), at(2, 16), at(2, 17), None)
    ]
    assert l7["rounds"] == [
        (1, at(2, 20), Decimal("9000.00"), Decimal("38250.00"), Decimal("10.00")),
    ]
    assert l7["terms"] == (Decimal("9000.00"), Decimal("38700.00"), at(3, 2), Decimal("10.00"))
    assert l7["document"] == (
        "contract",
        d(3, 2),
        Decimal("9000.00"),
        Decimal("38700.00"),
        at(3, 5),
        None,
    )
    assert l7["current_value_base"] == Decimal("38700.00")
    assert [row[:3] for row in l7["history"]] == [
        created,
        ("moved", "lead", "qualification"),
        ("moved", "qualification", "needs"),
        ("moved", "needs", "offer"),
        ("moved", "offer", "negotiation"),
        ("moved", "negotiation", "closing"),
        ("won", "closing", "closing"),
    ]

    # Won by a paid pro-forma; negotiation_at empty before closing_at: negotiation skipped.
    l8 = described(deal("L-8"))
    assert (l8["stage"], l8["status"], l8["owner"]) == ("closing", "won", "teammate")
    assert l8["stamps"] == (at(3, 2), at(3, 3), at(3, 4), at(3, 5), at(3, 9), at(3, 9))
    assert l8["history"] == [
        (*created, at(3, 2), None),
        ("moved", "lead", "qualification", at(3, 3), None),
        ("moved", "qualification", "needs", at(3, 4), None),
        ("moved", "needs", "offer", at(3, 5), None),
        ("skipped", "offer", "negotiation", at(3, 9), None),
        ("moved", "negotiation", "closing", at(3, 9), None),
        ("won", "closing", "closing", at(3, 20), None),
    ]
    assert l8["terms"] == (Decimal("4000.00"), Decimal("4000.00"), at(3, 9), None)
    assert l8["document"] == (
        "proforma",
        d(3, 9),
        Decimal("4000.00"),
        Decimal("4000.00"),
        None,
        at(3, 20),
    )
    assert l8["rounds"] == []

    # Lost reasons matched by English or Polish name, whatever the case.
    l9 = described(deal("L-9"))
    assert (l9["stage"], l9["status"]) == ("qualification", "lost")
    assert l9["lost"] == (at(3, 12), "not_qualified", "qualification")
    assert l9["history"][-1] == (
        "lost",
        "qualification",
        "qualification",
        at(3, 12),
        "not_qualified",
    )

    l10 = described(deal("L-10"))
    assert (l10["stage"], l10["status"]) == ("negotiation", "lost")
    assert l10["lost"] == (at(4, 15), "price", "negotiation")
    assert l10["offers"] == [
        (1, "rejected", Decimal("7000.00"), Decimal("7000.00"), at(4, 6), at(4, 7), at(4, 9))
    ]
    assert len(l10["rounds"]) == 1
    assert l10["history"][-1] == ("lost", "negotiation", "negotiation", at(4, 15), "price")


def test_a_dry_run_reports_what_would_be_created_and_writes_nothing(setup):
    companies = Company.objects.count()

    result = import_text(csv_text(*CLEAN), dry_run=True)

    assert (result.created, result.unchanged, result.failed, result.rejected) == (10, 0, 0, False)
    assert result.created_companies[:2] == ["Alfa sp. z o.o.", "Beta S.A."]
    assert (result.first_day, result.last_day) == (d(1, 5), d(4, 15))
    assert Deal.objects.count() == 0
    assert Company.objects.count() == companies
    assert DirtyDay.objects.count() == 0
    assert importing.report_lines(result)[0] == (
        "file: 10 deals would be created, 0 unchanged, 0 failed; dry run, nothing written."
    )


def test_an_import_drops_the_hours_trailing_statistics_and_a_dry_run_keeps_them(setup):
    company.store_inputs(timezone.now())
    import_text(csv_text(*CLEAN), dry_run=True)
    assert HourlyInputs.objects.count() == 1
    import_text(csv_text(*CLEAN))
    # The next recompute takes them again, from the imported deals.
    assert not HourlyInputs.objects.exists()


def test_reimporting_a_file_creates_no_duplicates(setup):
    import_text(csv_text(*CLEAN))
    before = all_described()

    result = import_text(csv_text(*CLEAN))

    assert (result.created, result.unchanged, result.failed) == (0, 10, 0)
    assert result.created_companies == []
    assert (result.first_day, result.last_day) == (None, None)
    assert Deal.objects.count() == 10
    assert all_described() == before


# Bad rows ------------------------------------------------------------------------------------

GOOD = {"company": "Good", "owner": "rep", "lead_at": "2026-01-05T09:00"}
OFFERED = {
    "company": "Offered",
    "owner": "rep",
    "lead_at": "2026-01-05T09:00",
    "offer_at": "2026-01-08T09:00",
    "offer_value": "1000",
    "offer_sent_at": "2026-01-09T09:00",
}
BAD = [
    {**GOOD, "external_id": "G-1"},  # line 2
    {**OFFERED, "negotiation_at": "2099-01-01T09:00"},
    {**GOOD, "owner": "ghost"},
    {**GOOD, "lead_at": "yesterday", "estimated_value": "12.345"},  # line 5
    {**GOOD, "qualification_at": "2026-01-06T10:00", "needs_at": "2026-01-06T09:00"},
    {
        **GOOD,
        "needs_at": "2026-01-07T09:00",
        "status": "lost",
        "lost_at": "2026-01-08T09:00",
        "lost_reason": "price",
        "lost_stage": "offer",
    },
    {**OFFERED, "negotiation_at": "2026-01-10T09:00", "closing_at": "2026-01-12T09:00"},
    {
        **OFFERED,
        "closing_at": "2026-01-12T09:00",
        "agreed_value": "900",
        "negotiation_rounds": "2",
    },
    {**GOOD, "negotiation_at": "2026-01-10T09:00"},  # line 10
    {**GOOD, "currency": "usd", "estimated_value": "100"},
    {
        **OFFERED,
        "closing_at": "2026-01-12T09:00",
        "agreed_value": "900",
        "document_type": "contract",
        "final_value": "900",
        "status": "won",
        "won_at": "2026-01-11T09:00",
    },
    {**GOOD, "status": "lost", "lost_at": "2026-01-08T09:00", "lost_reason": "Weather"},
    {**GOOD, "discount_pct": "5"},
    {**GOOD, "external_id": "G-1"},  # line 15
]
BAD_ERRORS = [
    (3, "negotiation_at: A moment in the future cannot be recorded."),
    (4, "owner: Unknown user 'ghost'."),
    (
        5,
        "estimated_value: Use at most two decimal places.; lead_at: 'yesterday' is not an "
        "ISO 8601 date or timestamp (e.g. 2025-03-14T09:30).",
    ),
    (
        6,
        "needs_at: It precedes qualification_at (2026-01-06 10:00); stage stamps follow "
        "the funnel's order.",
    ),
    (7, "lost_stage: 'offer' is not the last stamped stage (needs)."),
    (8, "agreed_value: Closing needs agreed terms: give agreed_value (or an accepted offer)."),
    (9, "negotiation_rounds: Rounds need a negotiation: negotiation_at is empty."),
    (10, "negotiation_at: Negotiation starts from a sent offer: send an offer first."),
    (11, "currency: No exchange rate for USD on or before 2026-01-05."),
    (
        12,
        "won_at: This moment precedes the deal's latest recorded event (2026-01-12 09:00); "
        "stages must stay in order.",
    ),
    (13, "lost_reason: Unknown lost reason 'Weather'."),
    (14, "discount_pct: A discount needs agreed_value (or an accepted offer)."),
    (15, "external_id: 'G-1' appears again (line 2)."),
]


def test_a_file_with_bad_rows_reports_each_by_line_and_imports_nothing(setup, tmp_path):
    companies, reasons = Company.objects.count(), LostReason.objects.count()
    path = tmp_path / "bad.csv"
    path.write_text(csv_text(*BAD), encoding="utf-8")
    err = io.StringIO()

    with pytest.raises(CommandError) as excinfo:
        call_command("import_deals", str(path), stdout=io.StringIO(), stderr=err)

    assert err.getvalue().splitlines() == [f"line {n}: {m}" for n, m in BAD_ERRORS]
    assert str(excinfo.value) == (
        f"{path}: nothing imported: 13 of 14 rows failed (1 valid, 0 unchanged). "
        "Use --valid-only to import the valid rows."
    )
    assert Deal.objects.count() == 0
    assert (Company.objects.count(), LostReason.objects.count()) == (companies, reasons)
    assert DirtyDay.objects.count() == 0

    result = import_text(csv_text(*BAD))
    assert result.errors == BAD_ERRORS
    assert (result.valid, result.created, result.failed, result.rejected) == (1, 0, 13, True)


#: Date-only history (each moment local midnight): stages sharing a day.
SAME_DAY = [
    {
        # Qualification and needs on one day, nothing done in qualification: a skip.
        # Offer, negotiation (a round) and closing on one day: stays of no length, as
        # the offer and the round show; discount with the accepted offer's terms.
        "external_id": "S-1",
        "company": "Same Day",
        "owner": "rep",
        "lead_at": "2026-02-02",
        "qualification_at": "2026-02-03",
        "needs_at": "2026-02-03",
        "offer_at": "2026-02-05",
        "offer_value": "1000",
        "offer_sent_at": "2026-02-05",
        "offer_status": "accepted",
        "negotiation_at": "2026-02-05",
        "negotiation_rounds": "1",
        "discount_pct": "10",
        "closing_at": "2026-02-05",
        "document_type": "contract",
        "final_value": "1000",
        "status": "won",
        "won_at": "2026-02-05",
    },
    {
        # Rejected and lost at offer: answered when lost.
        "external_id": "S-2",
        "company": "Same Day",
        "owner": "rep",
        "lead_at": "2026-02-02",
        "needs_at": "2026-02-03",
        "offer_at": "2026-02-04",
        "offer_value": "500",
        "offer_sent_at": "2026-02-05",
        "offer_status": "rejected",
        "status": "lost",
        "lost_at": "2026-02-09",
        "lost_reason": "price",
    },
    {
        # Accepted, negotiation skipped: answered on entering closing.
        "external_id": "S-3",
        "company": "Same Day",
        "owner": "rep",
        "lead_at": "2026-02-02",
        "needs_at": "2026-02-03",
        "offer_at": "2026-02-04",
        "offer_value": "700",
        "offer_sent_at": "2026-02-05",
        "offer_status": "accepted",
        "closing_at": "2026-02-10",
        "document_type": "proforma",
        "final_value": "700",
        "status": "won",
        "won_at": "2026-02-12",
    },
]


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "domain"])
def test_stages_sharing_a_day_are_stays_when_the_row_shows_work_in_them(setup, bulk):
    result = importing.import_deals(io.StringIO(csv_text(*SAME_DAY)), bulk=bulk)

    assert (result.created, result.failed, result.errors) == (3, 0, [])
    midnight = datetime.datetime(2026, 2, 5, tzinfo=WARSAW)
    tick = datetime.timedelta(microseconds=1)
    s1 = described(deal("S-1"))
    assert s1["stamps"] == (
        datetime.datetime(2026, 2, 2, tzinfo=WARSAW),
        *[datetime.datetime(2026, 2, 3, tzinfo=WARSAW)] * 2,
        midnight,
        midnight + tick,
        midnight + 2 * tick,
    )
    assert [h[:3] for h in s1["history"]] == [
        ("created", None, "lead"),
        ("skipped", "lead", "qualification"),
        ("moved", "qualification", "needs"),
        ("moved", "needs", "offer"),
        ("moved", "offer", "negotiation"),
        ("moved", "negotiation", "closing"),
        ("won", "closing", "closing"),
    ]
    thousand = Decimal("1000.00")
    assert s1["offers"] == [
        (1, "accepted", thousand, thousand, midnight, midnight, midnight + tick)
    ]
    assert s1["rounds"] == [(1, midnight + tick, thousand, thousand, Decimal("10.00"))]
    assert s1["terms"][:2] == (thousand, thousand)
    assert deal("S-1").discount_pct == Decimal("10.00")
    assert deal("S-1").won_at == midnight + 2 * tick

    s2 = described(deal("S-2"))
    assert s2["offers"][0][1] == "rejected"
    assert s2["offers"][0][6] == datetime.datetime(2026, 2, 9, tzinfo=WARSAW)
    s3 = described(deal("S-3"))
    assert s3["history"][4][:3] == ("skipped", "offer", "negotiation")
    assert s3["offers"][0][1] == "accepted"
    assert s3["offers"][0][6] == datetime.datetime(2026, 2, 10, tzinfo=WARSAW)

    recompute.recompute_all(grains=["month"])

    def kpi(code):
        return company_reading(code, d(2, 1))

    # Answered after 1 µs (S-1), 4 days (S-2) and 5 days (S-3).
    assert kpi("offer_turnaround_days") == (Decimal("3"), Decimal("9"), Decimal("3"))
    # S-1's offer stay (1 µs) counts; nobody skipped the offer stage.
    assert kpi("skipped_offer_pct") == (Decimal("0"), Decimal("0"), Decimal("3"))
    # S-1 by the shared day, S-2 and S-3 by an empty qualification_at.
    assert kpi("skipped_qualification_pct") == (Decimal("100"), Decimal("3"), Decimal("3"))
    assert kpi("negotiation_rounds") == (Decimal("1"), Decimal("1"), Decimal("1"))
    assert kpi("avg_discount_pct") == (Decimal("10"), Decimal("10"), Decimal("1"))


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "domain"])
def test_an_answer_of_a_deal_still_in_offer_is_dated_at_the_sending(setup, bulk):
    """The file gives no other moment for it (docs/kpis.md, "Imported history")."""
    row = {
        "external_id": "S-4",
        "company": "Still Offered",
        "owner": "rep",
        "lead_at": "2026-02-02",
        "needs_at": "2026-02-03",
        "offer_at": "2026-02-04",
        "offer_value": "800",
        "offer_sent_at": "2026-02-05",
        "offer_status": "accepted",
        "discount_pct": "5",
    }
    result = importing.import_deals(io.StringIO(csv_text(row)), bulk=bulk)

    assert (result.created, result.errors) == (1, [])
    sent = datetime.datetime(2026, 2, 5, tzinfo=WARSAW)
    s4 = described(deal("S-4"))
    assert (s4["stage"], s4["status"]) == ("offer", "open")
    assert s4["offers"][0][1] == "accepted"
    assert s4["offers"][0][5:] == (sent, sent)
    # Accepting agreed the offer's value; the row's discount goes with it.
    assert s4["terms"] == (Decimal("800.00"), Decimal("800.00"), sent, Decimal("5.00"))


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "domain"])
def test_bad_qualification_answers_and_close_dates_are_reported_by_column(setup, bulk):
    rows = [
        {**GOOD, "external_id": "Q-1", "heard_from": "Webinar", "qualification_score": "100"},
        {**GOOD, "qualification_score": "101", "expected_close_date": "31.05.2026"},
        {**GOOD, "qualification_score": "-1", "expected_close_date": "2026-05-31T10:00"},
        {**GOOD, "product_scope": "x" * 201},
    ]

    result = importing.import_deals(io.StringIO(csv_text(*rows)), bulk=bulk, valid_only=True)

    assert result.errors == [
        (
            3,
            "qualification_score: '101' is not a whole number from 0 to 100.; "
            "expected_close_date: '31.05.2026' is not a date (YYYY-MM-DD).",
        ),
        (
            4,
            "qualification_score: '-1' is not a whole number from 0 to 100.; "
            "expected_close_date: '2026-05-31T10:00' is not a date (YYYY-MM-DD).",
        ),
        (5, "product_scope: Ensure this value has at most 200 characters (it has 201)."),
    ]
    assert (result.created, result.failed) == (1, 3)
    assert described(deal("Q-1"))["details"] == ("Webinar", "", "", 100, None)


def test_valid_only_imports_the_good_rows_and_reports_the_bad_ones(setup):
    result = import_text(csv_text(*BAD), valid_only=True)

    assert result.errors == BAD_ERRORS
    assert (result.created, result.failed, result.rejected) == (1, 13, False)
    assert list(Deal.objects.values_list("external_id", "company__name")) == [("G-1", "Good")]
    # Companies of failed rows were rolled back with their rows.
    assert not Company.objects.filter(name="Offered").exists()
    assert result.created_companies == ["Good"]


def test_an_unreadable_file_is_reported_as_a_whole(setup):
    result = import_text("external_id,colour\nX,blue\n")
    assert result.errors == [
        (1, f"Unknown column colour; the columns are {', '.join(importing.DEAL_COLUMNS)}.")
    ]
    assert result.rejected

    result = importing.import_deals(b"company,owner,lead_at\n\xff,rep,2026-01-05\n")
    assert result.errors == [(2, "The file is not UTF-8 text; save it as CSV UTF-8.")]

    result = import_text("company,owner\nX,rep\n")
    assert result.errors == [(1, "Missing column lead_at.")]


# Unknown owners, channels and lost reasons ----------------------------------------------------

STRANGERS = {
    "external_id": "S-1",
    "company": "Kappa",
    "owner": "nowak@example.com",
    "channel": "Targi",
    "lead_at": "2026-01-05T09:00",
    "qualification_at": "2026-01-06T09:00",
    "status": "lost",
    "lost_at": "2026-01-07T09:00",
    "lost_reason": "Bad weather",
    "lost_stage": "qualification",
}


def test_unknown_owner_channel_and_reason_are_reported_without_create_missing(setup):
    users = User.objects.count()

    result = import_text(csv_text(STRANGERS))

    assert result.errors == [
        (
            2,
            "owner: Unknown user 'nowak@example.com'.; channel: Unknown channel 'Targi'.; "
            "lost_reason: Unknown lost reason 'Bad weather'.",
        )
    ]
    assert User.objects.count() == users
    assert not Channel.objects.filter(name="Targi").exists()
    assert Deal.objects.count() == 0


def test_create_missing_creates_the_owner_channel_and_reason(setup):
    kappa = Company.objects.create(name="Kappa", segment="SMB")

    result = import_text(csv_text({**STRANGERS, "industry": "Retail"}), create_missing=True)

    assert (result.created, result.failed) == (1, 0)
    assert result.created_owners == ["nowak@example.com"]
    assert result.created_channels == ["Targi"]
    assert result.created_reasons == ["bad_weather"]
    owner = User.objects.get(username="nowak@example.com")
    assert (owner.email, owner.role, owner.is_active) == ("nowak@example.com", Role.REP, True)
    assert not owner.has_usable_password()
    reason = LostReason.objects.get(code="bad_weather")
    assert (reason.name_en, reason.name_pl) == ("Bad weather", "Bad weather")
    imported = deal("S-1")
    assert (imported.owner, imported.channel.name, imported.lost_reason) == (owner, "Targi", reason)
    # An existing company is reused; only its empty industry is filled in.
    assert result.created_companies == []
    kappa.refresh_from_db()
    assert (imported.company, kappa.industry, kappa.segment) == (kappa, "Retail", "SMB")

    # Known now: the next file finds them, by e-mail, name and reason name.
    again = import_text(csv_text({**STRANGERS, "external_id": "S-2", "company": "Lambda"}))
    assert (again.created, again.created_owners, again.created_reasons) == (1, [], [])


# Round trip ------------------------------------------------------------------------------------


def exported(deals=None):
    out = io.StringIO()
    importing.export_deals(out, deals)
    return out.getvalue()


def test_export_then_import_into_an_empty_funnel_reproduces_every_deal(setup):
    import_text(csv_text(*CLEAN))
    originals = all_described()
    text = exported()
    Deal.objects.all().delete()

    result = import_text(text)

    assert (result.created, result.failed) == (10, 0)
    assert all_described() == originals


def test_export_writes_iso_timestamps_with_offset_and_plain_numbers(setup, rep, tmp_path):
    import_text(csv_text(*CLEAN[6:]))
    path = tmp_path / "out.csv"
    out = io.StringIO()

    call_command("export_deals", str(path), "--owner", "teammate", stdout=out)

    assert out.getvalue() == f"{path}: 1 deals exported.\n"
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    # Issue 6's columns in its order, then the qualification answers and close date.
    assert list(rows[0]) == [
        *["external_id", "title", "company", "industry", "segment", "channel", "owner", "currency"],
        *["estimated_value", "first_touch_at", "lead_at", "qualification_at", "needs_at"],
        *["offer_at", "negotiation_at", "closing_at", "status", "stage", "won_at", "lost_at"],
        *["lost_reason", "lost_stage", "offer_value", "offer_sent_at", "offer_status"],
        *["negotiation_rounds", "agreed_value", "discount_pct", "document_type", "final_value"],
        *["heard_from", "contact_prompt", "product_scope", "qualification_score"],
        "expected_close_date",
    ]
    assert [row["external_id"] for row in rows] == ["L-8"]
    row = rows[0]
    assert (row["lead_at"], row["closing_at"], row["negotiation_at"]) == (
        "2026-03-02T09:00:00+01:00",
        "2026-03-09T09:00:00+01:00",
        "2026-03-09T09:00:00+01:00",
    )
    assert (row["won_at"], row["status"], row["stage"]) == (
        "2026-03-20T09:00:00+01:00",
        "won",
        "closing",
    )
    assert (row["offer_value"], row["offer_status"], row["negotiation_rounds"]) == (
        "4000.00",
        "sent",
        "0",
    )
    assert (row["document_type"], row["final_value"], row["qualification_at"]) == (
        "proforma",
        "4000.00",
        "2026-03-03T09:00:00+01:00",
    )
    # Summer time: the offset follows the moment.
    assert importing.deal_row(deal("L-10"))["lost_at"] == "2026-04-15T09:00:00+02:00"


def test_deals_entered_through_the_transitions_export_and_import_back_the_same(
    setup, rep, teammate
):
    build_directly(rep, teammate, setup["google"])
    originals = all_described()
    text = exported()
    Deal.objects.all().delete()

    result = import_text(text)

    assert (result.created, result.failed) == (5, 0)
    reimported = all_described()
    for external_id, original in originals.items():
        # The change log's actor differs (nobody vs the rep); nothing else may.
        assert reimported[external_id] == original, external_id


def test_export_neutralises_formulas_in_text_cells_and_import_restores_them(setup, rep):
    company = Company.objects.create(name="+48 Telecom")
    domain.create_deal(
        by=rep,
        owner=rep,
        company=company,
        title='=HYPERLINK("http://evil","x")',
        at=at(1, 5),
        channel=Channel.objects.create(name="@partners"),
        estimated_value=Decimal("1200.50"),
        external_id="-1",
        industry="\tTabbed",
        segment="'plain quote",
    )

    text = exported()
    row = next(csv.DictReader(io.StringIO(text)))

    assert row["title"] == '\'=HYPERLINK("http://evil","x")'
    assert (row["company"], row["channel"], row["external_id"]) == (
        "'+48 Telecom",
        "'@partners",
        "'-1",
    )
    assert row["industry"] == "'\tTabbed"
    assert row["segment"] == "'plain quote"  # not a formula: left alone
    assert row["estimated_value"] == "1200.50"  # numbers stay numbers
    assert importing.neutralise("-5 %") == "'-5 %"
    assert importing.neutralise("\rx") == "'\rx"

    Deal.objects.all().delete()
    result = import_text(text)

    assert result.failed == 0
    again = deal("-1")
    assert (again.title, again.company, again.channel.name) == (
        '=HYPERLINK("http://evil","x")',
        company,
        "@partners",
    )
    assert (again.industry, again.segment) == ("\tTabbed", "'plain quote")


# KPIs ---------------------------------------------------------------------------------------------

KPI_ROWS = [CLEAN[3], *CLEAN[6:]]  # L-4, L-7, L-8, L-9, L-10


def build_directly(rep, teammate, google):
    """The deals of KPI_ROWS, entered through the transition functions one by one."""
    S = Stage

    def company(name, **kw):
        return Company.objects.get_or_create(name=name, defaults=kw)[0]

    def new(external_id, name, owner, lead_at, **kw):
        return domain.create_deal(
            by=owner, owner=owner, company=company(name), title=name, at=lead_at,
            external_id=external_id, **kw,
        )  # fmt: skip

    # L-4: straight to an offer, a draft.
    gamma = new("L-4", "Gamma", rep, at(1, 10, 10), estimated_value=Decimal("5000"))
    domain.move_forward(gamma, S.OFFER, by=rep, at=at(1, 12, 10))
    domain.start_offer(gamma, value=Decimal("5000"), by=rep, at=at(1, 12, 10))

    # L-7: won in EUR after a round, 10 % off.
    zeta = domain.create_deal(
        by=rep, owner=rep, title="Zeta GmbH", at=at(2, 10), channel=google, currency=EUR,
        company=company("Zeta GmbH", industry="Manufacturing", segment="Enterprise"),
        estimated_value=Decimal("10000"), external_id="L-7", industry="Manufacturing",
        segment="Enterprise", heard_from="Trade fair", contact_prompt="=new plant",
        product_scope="CRM licences", qualification_score=80, expected_close_date=d(3, 10),
    )  # fmt: skip
    for stage, moment in ((S.QUALIFICATION, at(2, 11)), (S.NEEDS, at(2, 12)), (S.OFFER, at(2, 16))):
        domain.move_forward(zeta, stage, by=rep, at=moment)
    offer = domain.start_offer(zeta, value=Decimal("10000"), by=rep, at=at(2, 16))
    domain.send_offer(offer, by=rep, at=at(2, 17))
    domain.move_forward(zeta, S.NEGOTIATION, by=rep, at=at(2, 20))
    domain.add_round(
        zeta, held_at=at(2, 20), proposed_value=Decimal("9000"), discount_pct=10, by=rep
    )
    domain.agree_terms(zeta, agreed_value=Decimal("9000"), discount_pct=10, by=rep, at=at(3, 2))
    domain.move_forward(zeta, S.CLOSING, by=rep, at=at(3, 2))
    domain.save_closing_document(
        zeta, document_type="contract", issue_date=d(3, 2), final_value=Decimal("9000"), by=rep
    )
    domain.win(zeta, by=rep, at=at(3, 5))

    # L-8: a pro-forma paid; negotiation skipped.
    eta = new("L-8", "Eta", teammate, at(3, 2), estimated_value=Decimal("4500"))
    for stage, moment in ((S.QUALIFICATION, at(3, 3)), (S.NEEDS, at(3, 4)), (S.OFFER, at(3, 5))):
        domain.move_forward(eta, stage, by=teammate, at=moment)
    offer = domain.start_offer(eta, value=Decimal("4000"), by=teammate, at=at(3, 5))
    domain.send_offer(offer, by=teammate, at=at(3, 6))
    domain.agree_terms(eta, agreed_value=Decimal("4000"), by=teammate, at=at(3, 9))
    domain.move_forward(eta, S.CLOSING, by=teammate, at=at(3, 9))
    domain.save_closing_document(
        eta, document_type="proforma", issue_date=d(3, 9), final_value=Decimal("4000"), by=teammate
    )
    domain.win(eta, by=teammate, at=at(3, 20))

    # L-9: disqualified.
    theta = new("L-9", "Theta", rep, at(3, 10))
    domain.move_forward(theta, S.QUALIFICATION, by=rep, at=at(3, 11))
    domain.disqualify(theta, by=rep, at=at(3, 12))

    # L-10: offer rejected, lost on price after a round.
    iota = new("L-10", "Iota", rep, at(4, 1), estimated_value=Decimal("7000"))
    for stage, moment in ((S.QUALIFICATION, at(4, 2)), (S.NEEDS, at(4, 3)), (S.OFFER, at(4, 6))):
        domain.move_forward(iota, stage, by=rep, at=moment)
    offer = domain.start_offer(iota, value=Decimal("7000"), by=rep, at=at(4, 6))
    domain.send_offer(offer, by=rep, at=at(4, 7))
    domain.reject_offer(offer, by=rep, at=at(4, 9))
    domain.move_forward(iota, S.NEGOTIATION, by=rep, at=at(4, 9))
    domain.add_round(iota, held_at=at(4, 9), proposed_value=Decimal("7000"), by=rep)
    domain.mark_lost(iota, lost_reason("price"), by=rep, at=at(4, 15))


def company_months():
    """Every stored KPI value of the company slice for January to April 2026."""
    return {
        (s.kpi, s.period_start, s.breakdown): (s.value, s.numerator, s.denominator, s.extra)
        for s in KpiSnapshot.objects.filter(
            grain="month", slice="company", period_start__in=[d(m, 1) for m in (1, 2, 3, 4)]
        )
    }


def test_kpis_after_an_import_equal_those_of_the_same_deals_entered_directly(setup, rep, teammate):
    build_directly(rep, teammate, setup["google"])
    recompute.recompute_all(grains=["month"])
    direct = company_months()
    Deal.objects.all().delete()
    KpiSnapshot.objects.all().delete()
    DirtyDay.objects.all().delete()

    result = import_text(csv_text(*KPI_ROWS))
    recompute.recompute_all(grains=["month"])
    imported = company_months()

    assert result.failed == 0
    assert imported == direct
    assert direct[("won_value", d(3, 1), "")][0] == Decimal("42700")
    assert direct[("leads", d(1, 1), "")][0] == 1
    assert direct[("lost_reasons", d(3, 1), "reason:not_qualified")][0] == 1
    # Leads and lead quality by the qualification answers the file carries.
    assert direct[("leads", d(2, 1), "source:Trade fair")][0] == 1
    assert direct[("lead_quality_pct", d(2, 1), "scope:CRM licences")][:3] == (100, 1, 1)


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "domain"])
def test_a_second_file_marks_every_day_its_deals_were_open(setup, bulk):
    """A deal loaded back-dated was open from its creation: its owner is an active rep
    in every period of it, so an incremental recompute after a second file gives what a
    full one gives (audit of session 15: 1 lead ÷ 1 active rep in February, not ÷ 2)."""
    first = [
        {"external_id": "X-1", "company": "Xa", "owner": "rep", "lead_at": "2026-01-06T09:00"},
        {"external_id": "X-2", "company": "Xb", "owner": "rep", "lead_at": "2026-02-10T09:00"},
    ]
    second = {
        "external_id": "Y-1",
        "company": "Ya",
        "owner": "teammate",
        "lead_at": "2026-01-02T09:00",
        "status": "lost",
        "lost_at": "2026-04-15T09:00",
        "lost_reason": "No response",
        "lost_stage": "lead",
    }
    importing.import_deals(io.StringIO(csv_text(*first)), bulk=bulk)
    recompute.recompute_all(grains=["month"])
    DirtyDay.objects.all().delete()

    result = importing.import_deals(io.StringIO(csv_text(second)), bulk=bulk, create_missing=True)

    assert (result.created, result.failed) == (1, 0)
    today = local_date(timezone.now())
    marked = set(DirtyDay.objects.values_list("day", flat=True))
    assert marked >= {d(1, 2) + datetime.timedelta(days=n) for n in range((today - d(1, 2)).days)}
    while recompute.recompute_dirty():
        pass

    def per_rep():
        return company_reading("new_leads_per_rep", d(2, 1))

    assert per_rep() == (Decimal("0.5"), Decimal("1"), Decimal("2"))
    recompute.recompute_all(grains=["month"])
    assert per_rep() == (Decimal("0.5"), Decimal("1"), Decimal("2"))


def test_an_import_takes_the_horizon_of_maturity_again(setup, rep):
    """Twenty wins loaded after the hour's horizon was taken (90 days while fewer than
    20 won) move it at once, not at the next hour (audit of session 15)."""
    assert reading.maturity_days() == Decimal("90.0000")
    wins = [
        {
            "external_id": f"W-{n}",
            "company": f"W{n}",
            "owner": "rep",
            "lead_at": (timezone.now() - datetime.timedelta(days=10 * n + 30)).isoformat(),
            "offer_at": (timezone.now() - datetime.timedelta(days=32)).isoformat(),
            "offer_value": "1000",
            "offer_sent_at": (timezone.now() - datetime.timedelta(days=32)).isoformat(),
            "offer_status": "accepted",
            "closing_at": (timezone.now() - datetime.timedelta(days=30)).isoformat(),
            "document_type": "contract",
            "final_value": "1000",
            "status": "won",
            "won_at": (timezone.now() - datetime.timedelta(days=30)).isoformat(),
        }
        for n in range(1, 21)
    ]

    result = import_text(csv_text(*wins))

    assert (result.created, result.failed, result.errors[:1]) == (20, 0, [])
    # Days to close 10, 20, ..., 200: the 80th percentile is 161 + 0.2 × 10 = 162.
    assert reading.maturity_days() == Decimal("162.0000")
    assert MaturityHorizon.objects.get().days == Decimal("162.0000")


# Spend ---------------------------------------------------------------------------------------------


def test_spend_import_upserts_each_channel_month_in_base_currency(setup, tmp_path):
    path = tmp_path / "spend.csv"
    # Semicolons and decimal commas, as a spreadsheet in a Polish locale saves them.
    path.write_text(
        "channel;month;amount;currency\n"
        "Google Ads;2026-01;3 000,00;\n"
        "referral;2026-02;1000;EUR\n"
        "Google Ads;2026-03;500.50;PLN\n",
        encoding="utf-8-sig",
    )
    out = io.StringIO()

    call_command("import_spend", str(path), stdout=out, stderr=io.StringIO())

    assert out.getvalue().splitlines()[:2] == [
        f"{path}: 3 spend rows created, 0 updated, 0 unchanged, 0 failed.",
        "Affected dates: 2026-01-01 to 2026-03-31.",
    ]
    assert list(
        MarketingSpend.objects.order_by("month").values_list(
            "channel__name", "month", "amount", "currency", "amount_base"
        )
    ) == [
        ("Google Ads", d(1, 1), Decimal("3000.00"), PL, Decimal("3000.00")),
        ("Referral", d(2, 1), Decimal("1000.00"), EUR, Decimal("4250.00")),
        ("Google Ads", d(3, 1), Decimal("500.50"), PL, Decimal("500.50")),
    ]
    # The KPIs were recomputed: the week of 26 January to 1 February holds 6/31 of
    # January's spend and 1/28 of February's.
    week = KpiSnapshot.objects.get(
        kpi="cpl", grain="week", period_start=d(1, 26), slice="company", breakdown=""
    )
    expected = Decimal("3000") * 6 / 31 + Decimal("4250") / 28
    assert week.numerator.quantize(Decimal("0.000001")) == expected.quantize(Decimal("0.000001"))
    assert KpiSnapshot.objects.get(
        kpi="cpl", grain="month", period_start=d(2, 1), slice="company", breakdown=""
    ).numerator == Decimal("4250")

    # Again, with one amount changed: one update, the rest unchanged.
    result = importing.import_spend(
        io.StringIO("channel,month,amount\nGoogle Ads,2026-01,3000\nGoogle Ads,2026-03,600\n")
    )
    assert (result.created, result.updated, result.unchanged, result.failed) == (0, 1, 1, 0)
    assert MarketingSpend.objects.get(month=d(3, 1)).amount_base == Decimal("600.00")
    assert (result.first_day, result.last_day) == (d(3, 1), d(3, 31))


def test_spend_errors_are_reported_by_line_and_nothing_is_written(setup):
    text = (
        "channel,month,amount,currency\n"
        "Google Ads,2026-04,100,\n"
        "Google Ads,2026-13,100,\n"
        "Google Ads,2026-05,100,USD\n"
        "Billboards,2026-05,100,\n"
        "Google Ads,2026-04,-5,\n"
    )

    result = importing.import_spend(io.StringIO(text))

    assert result.errors == [
        (3, "month: '2026-13' is not a month as YYYY-MM."),
        (4, "currency: No exchange rate for USD on or before 2026-05-01."),
        (5, "channel: Unknown channel 'Billboards'."),
        (6, "amount: An amount cannot be negative."),
    ]
    assert result.rejected
    assert MarketingSpend.objects.count() == 0

    result = importing.import_spend(io.StringIO(text), valid_only=True, create_missing=True)
    assert [line for line, _ in result.errors] == [3, 4, 6]
    assert result.created_channels == ["Billboards"]
    assert sorted(MarketingSpend.objects.values_list("channel__name", "month")) == [
        ("Billboards", d(5, 1)),
        ("Google Ads", d(4, 1)),
    ]


@pytest.mark.parametrize(
    "command, option",
    [
        ("import_deals", "--by"),
        ("import_activities", "--by"),
        ("export_deals", "--owner"),
        ("export_activities", "--owner"),
    ],
)
def test_a_command_names_the_option_whose_user_does_not_exist(db, tmp_path, command, option):
    path = tmp_path / "file.csv"
    path.write_text("", encoding="utf-8")

    with pytest.raises(CommandError) as excinfo:
        call_command(command, str(path), option, "nobody", stdout=io.StringIO())

    assert str(excinfo.value) == f"{option}: no user 'nobody'."
