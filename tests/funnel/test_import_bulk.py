"""The bulk path of the deals import (funnel/import_bulk.py) writes exactly what the
domain path writes: the same file imported both ways leaves the same rows in every
table it touches, and reports the same outcome, line by line."""

import pytest
from django.utils import timezone

from accounts.models import User
from funnel import import_bulk
from funnel.domain import DOCUMENT_TRACKED_FIELDS
from funnel.models import (
    Channel,
    ClosingDocument,
    Company,
    Deal,
    DealChange,
    LostReason,
    NegotiationRound,
    Offer,
    StageHistory,
)
from kpis.models import DirtyDay
from tests.funnel.test_import import (  # noqa: F401 (setup: a fixture)
    BAD,
    BAD_ERRORS,
    CLEAN,
    csv_text,
    import_text,
    setup,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("setup")]

#: Paths CLEAN leaves out. Lines 12 to 22 after CLEAN's ten.
MORE = [
    {  # accepted when sent, no negotiation yet: the offer's value is agreed at once
        "external_id": "M-1",
        "company": "Mu",
        "owner": "rep",
        "currency": "EUR",
        "estimated_value": "3000",
        "lead_at": "2026-01-20T09:00",
        "offer_at": "2026-01-22T09:00",
        "offer_value": "2900.10",
        "offer_sent_at": "2026-01-23T09:00",
        "offer_status": "accepted",
        "stage": "offer",
    },
    {  # terms agreed in negotiation, never closed: agreed at the latest event
        "external_id": "M-2",
        "title": "Nu renewal",
        "company": "Nu",
        "owner": "teammate",
        "estimated_value": "12000",
        "first_touch_at": "2026-01-01T08:00",
        "lead_at": "2026-01-21T09:00",
        "qualification_at": "2026-01-22T09:00",
        "needs_at": "2026-01-23T09:00",
        "offer_at": "2026-01-26T09:00",
        "offer_value": "11500",
        "offer_sent_at": "2026-01-27T09:00",
        "offer_status": "sent",
        "negotiation_at": "2026-01-29T09:00",
        "negotiation_rounds": "3",
        "agreed_value": "11000",
        "discount_pct": "4.35",
        "stage": "negotiation",
    },
    {  # qualification and needs at the lead's own moment: a stay, then skips
        "external_id": "M-3",
        "company": "kappa",  # an existing company, another case; fills its industry
        "industry": "Retail",
        "owner": "rep",
        "lead_at": "2026-01-22T09:00",
        "needs_at": "2026-01-22T09:00",
        "stage": "needs",
    },
    {  # lost as a lead, for a reason created on the way (create_missing)
        "external_id": "M-4",
        "company": "Xi",
        "channel": "Trade fair",
        "owner": "new.person@example.com",
        "lead_at": "2026-01-23T09:00",
        "status": "lost",
        "lost_at": "2026-01-25T09:00",
        "lost_reason": "Went quiet",
        "lost_stage": "lead",
    },
    {  # the same new owner, channel and reason, known by now
        "external_id": "M-5",
        "company": "Omicron",
        "channel": "trade FAIR",
        "owner": "new.person@example.com",
        "lead_at": "2026-01-24T09:00",
        "qualification_at": "2026-01-26T09:00",
        "status": "lost",
        "lost_at": "2026-01-27T09:00",
        "lost_reason": "went quiet",
    },
    {  # won in EUR across a change of rate: the document's base value at the win
        "external_id": "M-6",
        "company": "Pi",
        "owner": "rep",
        "currency": "eur",
        "estimated_value": "5000",
        "lead_at": "2026-02-02T09:00",
        "qualification_at": "2026-02-03T09:00",
        "needs_at": "2026-02-04T09:00",
        "offer_at": "2026-02-05T09:00",
        "offer_value": "5000",
        "offer_sent_at": "2026-02-06T09:00",
        "offer_status": "rejected",
        "negotiation_at": "2026-02-10T09:00",
        "negotiation_rounds": "1",
        "agreed_value": "4700",
        "discount_pct": "6",
        "closing_at": "2026-02-26T09:00",
        "document_type": "proforma",
        "final_value": "4650.55",
        "status": "won",
        "won_at": "2026-03-03T09:00",
    },
    {  # accepted at the negotiation's start, then other terms agreed at closing
        "external_id": "M-7",
        "company": "Rho",
        "owner": "rep",
        "estimated_value": "9000",
        "lead_at": "2026-02-09T09:00",
        "qualification_at": "2026-02-10T09:00",
        "needs_at": "2026-02-11T09:00",
        "offer_at": "2026-02-12T09:00",
        "offer_value": "9000",
        "offer_sent_at": "2026-02-13T09:00",
        "offer_status": "accepted",
        "negotiation_at": "2026-02-16T09:00",
        "closing_at": "2026-02-18T09:00",
        "agreed_value": "8500",
        "document_type": "contract",
        "final_value": "8500",
        "status": "lost",
        "lost_at": "2026-02-20T09:00",
        "lost_reason": "price",
        "lost_stage": "closing",
    },
    {  # a draft offer and a loss in the offer stage, no external id
        "title": "Sigma without id",
        "company": "Sigma",
        "owner": "rep",
        "lead_at": "2026-02-16T09:00",
        "offer_at": "2026-02-18T09:00",
        "offer_value": "100.5",
        "offer_status": "draft",
        "status": "lost",
        "lost_at": "2026-02-19T09:00",
        "lost_reason": "Cena",
    },
    {  # offer skipped to, negotiation skipped: the offer accepted on entering closing
        "external_id": "M-9",
        "company": "Tau",
        "owner": "teammate",
        "lead_at": "2026-03-02T09:00",
        "offer_at": "2026-03-03T09:00",
        "offer_value": "700",
        "offer_sent_at": "2026-03-04T09:00",
        "offer_status": "accepted",
        "closing_at": "2026-03-04T09:00",
        "document_type": "contract",
        "final_value": "700",
        "status": "won",
        "won_at": "2026-03-04T12:00",
    },
    # Refused by the domain (the replay hands them over): future, no rate, out of order.
    {"company": "Upsilon", "owner": "rep", "lead_at": "2099-01-01T09:00"},
    {
        "company": "Phi",
        "owner": "rep",
        "currency": "CHF",
        "estimated_value": "1",
        "lead_at": "2026-01-05",
    },
]


def natural_keys():
    deals = {
        pk: ext or title
        for pk, ext, title in Deal.objects.values_list("id", "external_id", "title")
    }
    return {
        "owner_id": dict(User.objects.values_list("id", "username")),
        "created_by_id": dict(User.objects.values_list("id", "username")),
        "by_id": dict(User.objects.values_list("id", "username")),
        "company_id": dict(Company.objects.values_list("id", "name")),
        "channel_id": dict(Channel.objects.values_list("id", "name")),
        "lost_reason_id": dict(LostReason.objects.values_list("id", "code")),
        "deal_id": deals,
    }


def dump(run):
    """Every row the import wrote, ids replaced by natural keys, in a stable order.
    Left out: what the wall clock stamps (a deal's updated_at, a company's created_at)
    and the users' join dates. What the wall clock stamps on the logs (every row's
    entered_at, the closing document's changes' moment) differs between two runs: it is
    checked to lie within ``run`` (the import's start and end) instead."""
    keys = natural_keys()
    started, ended = run

    def during_run(moment):
        assert started <= moment <= ended, (started, moment, ended)
        return "during the run"

    def table(model, order, exclude=()):
        rows = []
        for row in model.objects.values():
            for name in ("id", *exclude):
                row.pop(name, None)
            for name, natural in keys.items():
                if row.get(name) is not None:
                    row[name] = natural[row[name]]
            rows.append(row)
        return sorted(rows, key=lambda r: tuple(str(r[c]) for c in order))

    def history():
        # Ids order a deal's history: compare each deal's rows in id order.
        rows = {}
        for model in (StageHistory, DealChange):
            for row in model.objects.order_by("id").values():
                deal = keys["deal_id"][row.pop("deal_id")]
                row.pop("id")
                row["entered_at"] = during_run(row["entered_at"])
                if model is DealChange and row["field"] in DOCUMENT_TRACKED_FIELDS:
                    row["at"] = during_run(row["at"])
                for name in ("by_id", "lost_reason_id"):
                    if row.get(name) is not None:
                        row[name] = keys[name][row[name]]
                rows.setdefault((model.__name__, deal), []).append(row)
        return rows

    return {
        "deals": table(Deal, ["external_id", "title"], exclude=("updated_at",)),
        "history": history(),
        "offers": table(Offer, ["deal_id", "version"]),
        "rounds": table(NegotiationRound, ["deal_id", "number"]),
        "documents": table(ClosingDocument, ["deal_id"]),
        "companies": table(Company, ["name"], exclude=("created_at",)),
        "users": sorted(User.objects.values_list("username", "email", "role", "is_active")),
        "channels": sorted(Channel.objects.values_list("name", "is_active")),
        "reasons": sorted(LostReason.objects.values_list("code", "name_en", "name_pl", "position")),
        "dirty_days": sorted(DirtyDay.objects.values_list("day", flat=True)),
    }


def outcome(result):
    return (
        result.errors,
        [(line, what) for line, what, _ in result.rows],
        (result.valid, result.created, result.unchanged, result.failed, result.rejected),
        (result.created_owners, result.created_companies),
        (result.created_channels, result.created_reasons),
        (result.first_day, result.last_day),
    )


@pytest.fixture
def before():
    Company.objects.create(name="Kappa", segment="SMB")
    return {
        model: set(model.objects.values_list("pk", flat=True))
        for model in (User, Company, Channel, LostReason)
    }


def undo(before):
    """Back to the state before the import: the deals and what the file created."""
    Deal.objects.all().delete()
    DirtyDay.objects.all().delete()
    for model, kept in before.items():
        model.objects.exclude(pk__in=kept).delete()
    Company.objects.filter(name="Kappa").update(industry="")


def timed_import(text, **options):
    started = timezone.now()
    result = import_text(text, **options)
    return result, (started, timezone.now())


def both_ways(before, text, **options):
    by_domain, run = timed_import(text, bulk=False, **options)
    written = dump(run)
    undo(before)
    bulk, run = timed_import(text, **options)
    return by_domain, written, bulk, dump(run)


def test_the_bulk_path_writes_what_the_domain_path_writes(before, rep, monkeypatch):
    taken = []
    take = import_bulk.BulkDeals.take
    monkeypatch.setattr(
        import_bulk.BulkDeals,
        "take",
        lambda self, row, plan: taken.append(take(self, row, plan)) or taken[-1],
    )
    text = csv_text(*CLEAN, *MORE)

    domain, written, bulk, rewritten = both_ways(
        before, text, by=rep, create_missing=True, valid_only=True
    )

    assert taken == [True] * 13 + [False] + [True] * 5 + [False, False]
    assert outcome(bulk) == outcome(domain)
    assert domain.errors == [
        (21, "lead_at: A moment in the future cannot be recorded."),
        (22, "currency: No exchange rate for CHF on or before 2026-01-05."),
    ]
    assert (domain.created, domain.created_owners) == (19, ["new.person@example.com"])
    assert rewritten == written
    assert len(written["deals"]) == 19
    assert len(written["offers"]) == 12
    assert {c["name"]: c["industry"] for c in written["companies"]}["Kappa"] == "Retail"
    assert sum(len(rows) for rows in written["history"].values()) > 19 * 2
    # The closing documents and the wins are in the change log too, both ways.
    logged = {
        row["field"]
        for (model, _), rows in written["history"].items()
        if model == "DealChange"
        for row in rows
    }
    assert logged == {
        "agreed_value",
        "discount_pct",
        "document_type",
        "issue_date",
        "final_value",
        "signed_at",
        "paid_at",
    }


def test_refusals_and_rejection_are_the_same_both_ways(before):
    text = csv_text(*BAD)

    domain, written, bulk, rewritten = both_ways(before, text)

    assert outcome(bulk) == outcome(domain)
    assert bulk.errors == BAD_ERRORS
    assert rewritten == written
    assert written["deals"] == [] and written["dirty_days"] == []

    undo(before)
    domain, written, bulk, rewritten = both_ways(before, text, valid_only=True)
    assert outcome(bulk) == outcome(domain)
    assert rewritten == written
    assert [d["external_id"] for d in written["deals"]] == ["G-1"]


def test_a_dry_run_writes_nothing_and_reports_the_same(before):
    text = csv_text(*CLEAN, *MORE)

    domain, written, bulk, rewritten = both_ways(
        before, text, dry_run=True, create_missing=True, valid_only=True
    )

    assert outcome(bulk) == outcome(domain)
    assert domain.created == 19
    assert rewritten == written
    assert written["deals"] == [] and written["dirty_days"] == []


def test_deals_are_written_a_chunk_at_a_time(before, monkeypatch):
    monkeypatch.setattr(import_bulk, "CHUNK_DEALS", 3)
    text = csv_text(*CLEAN)

    domain, written, bulk, rewritten = both_ways(before, text)

    assert outcome(bulk) == outcome(domain)
    assert rewritten == written
    assert len(written["deals"]) == 10
