"""The field-level audit (issue 8): every edit of a deal's money, discount, owner or
closing document is a DealChange row, and every stage entry a StageHistory row, each
with who, the business moment (``at``, which a user may back-date) and the moment the
server wrote it (``entered_at``, which nobody can give). Shown to managers on the deal
page, in the admin, and in the API's history."""

import datetime
import re
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import formats, timezone, translation

from funnel import domain
from funnel.domain import StaleDealError
from funnel.models import (
    Activity,
    ClosingDocument,
    Deal,
    DealChange,
    NegotiationRound,
    Offer,
    StageHistory,
)
from funnel.stages import Stage
from tests.factories import days_ago, deal_in_stage, lost_reason, make_deal
from tests.funnel.test_admin import admin_url, browser_data
from tests.migrating import migrating

pytestmark = pytest.mark.django_db


class Clock:
    """The server's clock, standing still until moved on: ``entered_at`` is exact."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += datetime.timedelta(**delta)
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock(timezone.now().replace(microsecond=0))
    # The domain, the model defaults' callers and the views all read timezone.now.
    monkeypatch.setattr(timezone, "now", clock)
    return clock


def changes(deal, since=0):
    return list(
        DealChange.objects.filter(deal=deal, pk__gt=since)
        .order_by("id")
        .values_list("field", "old_value", "new_value", "by", "at", "entered_at")
    )


def history(deal, since=0):
    return list(
        StageHistory.objects.filter(deal=deal, pk__gt=since)
        .order_by("id")
        .values_list("event", "to_stage", "by", "at", "entered_at")
    )


def last_change_id():
    return DealChange.objects.order_by("-id").values_list("id", flat=True).first() or 0


def last_history_id():
    return StageHistory.objects.order_by("-id").values_list("id", flat=True).first() or 0


def updated_at(deal):
    return Deal.objects.values_list("updated_at", flat=True).get(pk=deal.pk)


def in_closing(rep):
    """A deal in closing since 4 days ago, terms agreed (9000.00, 10 %)."""
    return deal_in_stage(rep, Stage.CLOSING, start_days_ago=12)


def document(deal, by, *, document_type="contract", days=3, value="8800", number="C/7"):
    return domain.save_closing_document(
        deal,
        document_type=document_type,
        issue_date=timezone.localdate() - datetime.timedelta(days=days),
        final_value=Decimal(value),
        number=number,
        by=by,
    )


# What each domain write records --------------------------------------------------------


def test_back_dated_terms_keep_their_business_moment_and_are_entered_now(clock, rep, manager):
    deal = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=10)
    monday = days_ago(2)
    entered = clock.advance(minutes=5)

    domain.agree_terms(
        deal, agreed_value=Decimal("8500"), discount_pct=Decimal("5"), by=manager, at=monday
    )

    assert changes(deal) == [
        ("agreed_value", "", "8500.00", manager.pk, monday, entered),
        ("discount_pct", "", "5.00", manager.pk, monday, entered),
    ]
    assert updated_at(deal) == entered


def test_accepting_an_offer_logs_the_agreed_value_at_the_clients_answer(clock, rep):
    deal = deal_in_stage(rep, Stage.OFFER, start_days_ago=10)
    offer = domain.start_offer(deal, value=Decimal("9100"), by=rep, at=days_ago(6))
    domain.send_offer(offer, by=rep, at=days_ago(5))
    answered = days_ago(3)
    entered = clock.advance(hours=2)

    domain.accept_offer(offer, by=rep, at=answered)

    assert changes(deal) == [("agreed_value", "", "9100.00", rep.pk, answered, entered)]


def test_an_edit_of_tracked_fields_is_dated_and_entered_at_the_same_moment(
    clock, rep, teammate, manager
):
    deal = make_deal(rep, at=days_ago(10), estimated_value=Decimal("10000"))
    close = timezone.localdate() + datetime.timedelta(days=30)
    entered = clock.advance(minutes=1)

    domain.update_deal(
        deal,
        by=manager,
        estimated_value=Decimal("12000"),
        discount_pct=Decimal("7.5"),
        owner=teammate,
        expected_close_date=close,
        title="Not tracked",
    )

    assert changes(deal) == [
        ("estimated_value", "10000.00", "12000.00", manager.pk, entered, entered),
        ("discount_pct", "", "7.50", manager.pk, entered, entered),
        ("owner", str(rep), str(teammate), manager.pk, entered, entered),
        ("expected_close_date", "", close.isoformat(), manager.pk, entered, entered),
    ]
    assert updated_at(deal) == entered


def test_recording_the_closing_document_logs_each_of_its_fields(clock, rep):
    deal = in_closing(rep)
    issued = timezone.localdate() - datetime.timedelta(days=3)
    entered = clock.advance(minutes=3)
    since = last_change_id()

    document(deal, rep)

    assert changes(deal, since) == [
        ("document_type", "", "contract", rep.pk, entered, entered),
        ("number", "", "C/7", rep.pk, entered, entered),
        ("issue_date", "", issued.isoformat(), rep.pk, entered, entered),
        ("final_value", "", "8800.00", rep.pk, entered, entered),
    ]


def test_correcting_the_closing_document_logs_only_what_changed(clock, rep, manager):
    deal = in_closing(rep)
    document(deal, rep, days=3)
    # Each date as its document was dated (the hour may cross midnight).
    old_date = (timezone.localdate() - datetime.timedelta(days=3)).isoformat()
    entered = clock.advance(hours=1)
    since = last_change_id()

    document(deal, manager, document_type="proforma", days=2, value="8750.5")

    new_date = (timezone.localdate() - datetime.timedelta(days=2)).isoformat()
    assert changes(deal, since) == [
        ("document_type", "contract", "proforma", manager.pk, entered, entered),
        ("issue_date", old_date, new_date, manager.pk, entered, entered),
        ("final_value", "8800.00", "8750.50", manager.pk, entered, entered),
    ]


def test_saving_the_same_closing_document_again_logs_nothing(clock, rep):
    deal = in_closing(rep)
    document(deal, rep)
    version = Deal.objects.get(pk=deal.pk).version
    since = last_change_id()
    clock.advance(minutes=10)

    document(deal, rep)

    assert changes(deal, since) == []
    assert Deal.objects.get(pk=deal.pk).version == version + 1


@pytest.mark.parametrize(
    ("document_type", "field"), [("contract", "signed_at"), ("proforma", "paid_at")]
)
def test_winning_logs_when_the_document_was_signed_or_paid(clock, rep, document_type, field):
    deal = in_closing(rep)
    document(deal, rep, document_type=document_type)
    paid = days_ago(1)
    entered = clock.advance(minutes=2)
    since, history_since = last_change_id(), last_history_id()

    domain.win(deal, by=rep, at=paid)

    shown = timezone.localtime(paid).isoformat()
    assert changes(deal, since) == [(field, "", shown, rep.pk, paid, entered)]
    assert history(deal, history_since) == [("won", "closing", rep.pk, paid, entered)]
    assert getattr(ClosingDocument.objects.get(deal=deal), field) == paid


def test_each_stage_entry_is_entered_when_written_whatever_its_moment(clock, rep, manager):
    created_at, moved_at, lost_at, reopened_at = (
        days_ago(30),
        days_ago(20),
        days_ago(9),
        days_ago(2),
    )
    t0 = clock.now
    deal = make_deal(rep, at=created_at)
    t1 = clock.advance(seconds=30)
    domain.move_forward(deal, Stage.NEEDS, by=rep, at=moved_at)
    t2 = clock.advance(minutes=7)
    domain.mark_lost(deal, lost_reason("price"), by=rep, at=lost_at)
    t3 = clock.advance(days=1)
    domain.reopen(deal, by=manager, at=reopened_at)

    assert history(deal) == [
        ("created", "lead", rep.pk, created_at, t0),
        ("skipped", "qualification", rep.pk, moved_at, t1),
        ("moved", "needs", rep.pk, moved_at, t1),
        ("lost", "needs", rep.pk, lost_at, t2),
        ("reopened", "needs", manager.pk, reopened_at, t3),
    ]
    assert updated_at(deal) == t3
    # Transitions are the stage history's: they write no change-log rows.
    assert changes(deal) == []


def test_disqualifying_a_lead_enters_both_of_its_rows_at_once(clock, rep):
    deal = make_deal(rep, at=days_ago(5))
    at = days_ago(1)
    entered = clock.advance(minutes=4)

    domain.disqualify(deal, by=rep, at=at)

    assert history(deal)[1:] == [
        ("moved", "qualification", rep.pk, at, entered),
        ("lost", "qualification", rep.pk, at, entered),
    ]


def test_appending_offers_rounds_and_activities_writes_no_change_rows(clock, rep):
    """They are their own dated rows, with who wrote them: the change log is for edits
    of what the deal already held."""
    deal = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=10)
    clock.advance(minutes=1)

    offer = domain.start_offer(deal, value=Decimal("9500"), by=rep, at=days_ago(2))
    domain.send_offer(offer, by=rep, at=days_ago(1))
    domain.reject_offer(offer, by=rep, at=days_ago(1))
    domain.add_round(
        deal, held_at=days_ago(1), proposed_value=Decimal("9300"), discount_pct=2, by=rep
    )
    domain.log_activity(deal, kind="call", held_at=days_ago(1), by=rep)

    assert changes(deal) == []
    assert (
        Offer.objects.filter(deal=deal, version=2, created_by=rep).count(),
        NegotiationRound.objects.filter(deal=deal, by=rep, held_at=days_ago(1)).count(),
        Activity.objects.filter(deal=deal, by=rep, held_at=days_ago(1)).count(),
    ) == (1, 1, 1)


def test_a_refused_edit_writes_no_row(clock, rep):
    deal = in_closing(rep)
    seen = Deal.objects.get(pk=deal.pk).version
    document(deal, rep)
    since, history_since = last_change_id(), last_history_id()

    with pytest.raises(StaleDealError):
        domain.save_closing_document(
            deal,
            document_type="proforma",
            issue_date=timezone.localdate(),
            final_value=Decimal("1"),
            by=rep,
            expected_version=seen,
        )
    with pytest.raises(StaleDealError):
        domain.win(deal, by=rep, at=days_ago(1), expected_version=seen)

    assert (changes(deal, since), history(deal, history_since)) == ([], [])
    assert ClosingDocument.objects.get(deal=deal).document_type == "contract"


def test_entered_at_is_the_real_clock_at_the_write_when_at_is_back_dated(rep):
    deal = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=10)
    started = timezone.now()

    domain.agree_terms(deal, agreed_value=Decimal("8000"), by=rep, at=days_ago(3))

    ended = timezone.now()
    (row,) = DealChange.objects.filter(deal=deal)
    assert row.at == days_ago(3)
    assert started <= row.entered_at <= ended
    assert row.entered_at == updated_at(deal)


def test_domain_functions_take_no_entered_at(rep):
    deal = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=10)

    with pytest.raises(TypeError):
        domain.agree_terms(deal, agreed_value=Decimal("8000"), by=rep, entered_at=days_ago(1))

    assert changes(deal) == []


# The migration -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_backfills_entered_at_with_the_business_moment(seeded_rows):
    before, after = ("funnel", "0003_kpi_range_indexes"), ("funnel", "0004_entered_at")
    with migrating(before, after) as step:
        old = step.old
        user = old.get_model("accounts", "User").objects.create(username="old.rep")
        company = old.get_model("funnel", "Company").objects.create(name="Old Co")
        moment = datetime.datetime(2025, 3, 3, 9, 30, tzinfo=datetime.UTC)
        deal = old.get_model("funnel", "Deal").objects.create(
            title="Old deal",
            company=company,
            owner=user,
            created_by=user,
            entered_lead_at=moment,
            last_event_at=moment,
        )
        old.get_model("funnel", "StageHistory").objects.create(
            deal=deal, event="created", to_stage="lead", at=moment, by=user
        )
        old.get_model("funnel", "DealChange").objects.create(
            deal=deal,
            field="owner",
            old_value="a",
            new_value="b",
            at=moment + datetime.timedelta(days=1),
            by=user,
        )

        new = step.forward()
        assert list(
            new.get_model("funnel", "StageHistory").objects.values_list("at", "entered_at")
        ) == [(moment, moment)]
        assert list(
            new.get_model("funnel", "DealChange").objects.values_list("at", "entered_at")
        ) == [(moment + datetime.timedelta(days=1), moment + datetime.timedelta(days=1))]
        field = new.get_model("funnel", "DealChange")._meta.get_field("entered_at")
        assert (field.null, field.editable) == (False, False)


# The admin -----------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


def shown(moment):
    """A moment as the admin shows it: localized, in the current time zone."""
    return formats.localize(timezone.template_localtime(moment))


@pytest.mark.parametrize("model", [StageHistory, DealChange], ids=lambda m: m.__name__)
def test_the_admin_lists_show_when_each_row_was_entered(admin_client, clock, rep, model):
    deal = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=10)
    entered = clock.advance(minutes=30)
    domain.agree_terms(deal, agreed_value=Decimal("8000"), by=rep, at=days_ago(1))

    response = admin_client.get(admin_url(model, "changelist"))

    assert response.status_code == 200
    assert response.context["cl"].list_display[:2] == ("at", "entered_at")
    html = response.content.decode()
    assert '<th scope="col" class="sortable column-entered_at">' in html
    newest = model.objects.order_by("-entered_at", "-id").first()
    assert f'<td class="field-entered_at nowrap">{shown(newest.entered_at)}</td>' in html
    if model is DealChange:
        assert newest.entered_at == entered


def test_the_admin_shows_entered_at_read_only_and_refuses_to_change_it(admin_client, clock, rep):
    deal = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=10)
    entered = clock.advance(minutes=30)
    domain.agree_terms(deal, agreed_value=Decimal("8000"), by=rep, at=days_ago(1))
    row = DealChange.objects.get(deal=deal)
    url = admin_url(DealChange, "change", row.pk)

    page = admin_client.get(url)
    forged = admin_client.post(url, {"entered_at_0": "2020-01-01", "entered_at_1": "10:00"})

    assert page.status_code == 200
    assert f'<div class="readonly">{shown(entered)}</div>' in page.content.decode()
    assert forged.status_code == 403
    assert DealChange.objects.get(pk=row.pk).entered_at == entered


def test_the_deal_form_ignores_an_entered_at_posted_with_an_edit(admin_client, admin, clock, rep):
    deal = make_deal(rep, at=days_ago(10), estimated_value=Decimal("10000"))
    url = admin_url(Deal, "change", deal.pk)
    data = browser_data(admin_client.get(url))
    data["estimated_value"] = "12500.00"
    created = StageHistory.objects.get(deal=deal)
    forged = {"entered_at": "2020-01-01 10:00", "entered_at_0": "2020-01-01"}
    forged |= {"entered_at_1": "10:00", "history-0-id": created.pk}
    forged |= {"history-0-entered_at_0": "2020-01-01", "history-0-entered_at_1": "10:00"}
    entered = clock.advance(minutes=2)

    response = admin_client.post(url, {**data, **forged})

    assert response.status_code == 302
    assert changes(deal) == [
        ("estimated_value", "10000.00", "12500.00", admin.pk, entered, entered)
    ]
    assert StageHistory.objects.get(pk=created.pk).entered_at == created.entered_at


def test_the_deal_change_page_shows_entered_at_in_both_logs(admin_client, clock, rep):
    t0 = clock.now
    deal = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=10)
    entered = clock.advance(minutes=30)
    domain.agree_terms(deal, agreed_value=Decimal("8000"), by=rep, at=days_ago(1))

    response = admin_client.get(admin_url(Deal, "change", deal.pk))

    inlines = {formset.opts.model: formset for formset in response.context["inline_admin_formsets"]}
    for model in (StageHistory, DealChange):
        assert "entered_at" in inlines[model].readonly_fields
    cells = re.findall(r'<td class="field-entered_at">\s*<p>([^<]*)</p>', response.content.decode())
    # Five stage entries (lead to negotiation), then the one change.
    assert cells == [shown(t0)] * 5 + [shown(entered)]


# The API ---------------------------------------------------------------------------------


def api_url(deal, action):
    return reverse(f"api:deal-{action}", kwargs={"pk": deal.pk})


def test_the_api_history_gives_both_moments(api, clock, rep):
    t0 = clock.now
    deal = make_deal(rep, at=days_ago(6))
    entered = clock.advance(minutes=15)
    domain.move_forward(deal, Stage.QUALIFICATION, by=rep, at=days_ago(2))

    body = api.as_user(rep).get(api_url(deal, "history")).json()

    assert [
        (
            h["event"],
            datetime.datetime.fromisoformat(h["at"]),
            datetime.datetime.fromisoformat(h["entered_at"]),
        )
        for h in body
    ] == [("created", days_ago(6), t0), ("moved", days_ago(2), entered)]


def test_the_api_cannot_write_the_history(api, rep):
    deal = make_deal(rep, at=days_ago(6))
    rows = history(deal)
    client = api.as_user(rep)
    body = {"entered_at": "2020-01-01T10:00:00Z", "event": "won"}

    answers = [
        getattr(client, method)(api_url(deal, "history"), body, format="json").status_code
        for method in ("post", "put", "patch", "delete")
    ]

    assert answers == [405, 405, 405, 405]
    assert history(deal) == rows


def test_an_entered_at_posted_to_the_api_is_ignored(api, clock, rep):
    deal = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=10)
    entered = clock.advance(minutes=9)
    at = days_ago(1)

    response = api.as_user(rep).post(
        api_url(deal, "agree-terms"),
        {
            "version": deal.version,
            "agreed_value": "8000.00",
            "at": at.isoformat(),
            "entered_at": "2020-01-01T10:00:00Z",
        },
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert changes(deal) == [("agreed_value", "", "8000.00", rep.pk, at, entered)]


# The deal page ---------------------------------------------------------------------------


def test_a_manager_sees_when_a_back_dated_edit_was_entered(client, clock, rep, manager):
    deal = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=10)
    monday = days_ago(2)
    entered = clock.advance(minutes=5)
    domain.agree_terms(deal, agreed_value=Decimal("8500"), by=manager, at=monday)
    clock.advance(minutes=1)
    domain.update_deal(deal, by=manager, estimated_value=Decimal("11000"))
    client.force_login(manager)

    response = client.get(f"/deals/{deal.pk}/")

    html = response.content.decode()
    back_dated = html.split('data-field="agreed_value"', 1)[1].split("</li>", 1)[0]
    assert (
        f'<time datetime="{timezone.localtime(monday).isoformat()}">'
        f"{formats.date_format(timezone.localtime(monday), 'SHORT_DATETIME_FORMAT')}</time>"
        ' <span class="entered-at">(entered '
        f'<time datetime="{timezone.localtime(entered).isoformat()}">'
        f"{formats.date_format(timezone.localtime(entered), 'SHORT_DATETIME_FORMAT')}</time>)"
        "</span>"
    ) in back_dated
    on_time = html.split('data-field="estimated_value"', 1)[1].split("</li>", 1)[0]
    assert "entered" not in on_time
    assert [c.field for c in response.context["changes"]] == ["estimated_value", "agreed_value"]


def entered_shown(html):
    """The entry times the page shows, in its order."""
    parts = html.split('<span class="entered-at">(entered ')[1:]
    return [part.split(">", 1)[1].split("</time>", 1)[0] for part in parts]


def short(moment):
    return formats.date_format(timezone.localtime(moment), "SHORT_DATETIME_FORMAT")


def test_a_rep_sees_no_change_log_but_the_history_shows_late_entries(client, clock, rep):
    created = clock.now
    deal = make_deal(rep, at=days_ago(6))
    clock.advance(hours=3)
    domain.update_deal(deal, by=rep, estimated_value=Decimal("11000"))
    moved = clock.advance(hours=3)
    domain.move_forward(
        deal, Stage.QUALIFICATION, by=rep, at=moved - datetime.timedelta(seconds=30)
    )
    client.force_login(rep)

    response = client.get(f"/deals/{deal.pk}/")

    assert response.context["changes"] is None
    html = response.content.decode()
    assert "change-log" not in html
    # Newest first: the move, entered 30 seconds after its moment (one time shown), then
    # the creation, back-dated six days (both shown).
    assert [(row.event, row.entered_apart) for row in reversed(response.context["history"])] == [
        ("moved", False),
        ("created", True),
    ]
    assert entered_shown(html) == [short(created)]


def test_an_entry_within_a_minute_of_its_moment_shows_one_time(client, clock, rep, manager):
    deal = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=10)
    at = clock.now
    clock.advance(seconds=59)
    domain.agree_terms(deal, agreed_value=Decimal("8500"), by=manager, at=at)
    client.force_login(manager)

    html = client.get(f"/deals/{deal.pk}/").content.decode()

    change = html.split('data-field="agreed_value"', 1)[1].split("</li>", 1)[0]
    assert f'<time datetime="{timezone.localtime(at).isoformat()}">{short(at)}</time> ·' in change
    assert "entered" not in change


def test_the_entered_time_is_translated(client, clock, rep, manager):
    deal = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=10)
    clock.advance(minutes=5)
    domain.agree_terms(deal, agreed_value=Decimal("8500"), by=manager, at=days_ago(2))
    client.force_login(manager)
    client.cookies["django_language"] = "pl"

    # The request activates Polish for this thread: leave the language as it was.
    with translation.override(translation.get_language()):
        html = client.get(f"/deals/{deal.pk}/").content.decode()

    assert '<span class="entered-at">(wprowadzono <time' in html


def test_the_change_log_shows_a_document_type_by_its_label(client, clock, rep, manager):
    deal = in_closing(rep)
    document(deal, rep)
    clock.advance(minutes=5)
    document(deal, manager, document_type="proforma", days=2)
    client.force_login(manager)

    html = client.get(f"/deals/{deal.pk}/").content.decode()
    client.cookies["django_language"] = "pl"
    with translation.override(translation.get_language()):
        polish = client.get(f"/deals/{deal.pk}/").content.decode()

    def shown(page):
        rows = page.split('data-field="document_type"')[1:]
        return [
            (
                row.split('class="old-value">', 1)[1].split("<", 1)[0],
                row.split('class="new-value">', 1)[1].split("<", 1)[0],
            )
            for row in rows
        ]

    assert shown(html) == [("Contract", "Pro-forma invoice"), ("—", "Contract")]
    assert shown(polish) == [("Umowa", "Faktura pro forma"), ("—", "Umowa")]
