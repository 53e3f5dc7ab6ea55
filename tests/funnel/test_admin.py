import datetime
from decimal import Decimal

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.admin import site as admin_site
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.forms import MultiWidget
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.models import User
from funnel import domain
from funnel.models import (
    Activity,
    ClosingDocument,
    Deal,
    DealChange,
    ExchangeRate,
    MarketingSpend,
    NegotiationRound,
    Offer,
    SalesCost,
    StageHistory,
)
from funnel.stages import Stage
from kpis import company, reading
from kpis.models import (
    DirtyDay,
    Forecast,
    HourlyInputs,
    KpiSnapshot,
    LedgerState,
    MaturityHorizon,
    OpenNow,
    PendingChange,
    PeriodMeasures,
    RecomputeJob,
    StageSetting,
    StaleMedian,
    Target,
)
from tests.factories import (
    ChannelFactory,
    CompanyFactory,
    ContactFactory,
    days_ago,
    deal_in_stage,
    lost_reason,
    make_deal,
    won_deal,
)

#: Rows the domain functions or the KPI computation write (and the per-stage settings,
#: one row per stage): the admin never adds any.
VIEW_ONLY = {
    StageHistory,
    DealChange,
    Activity,
    Offer,
    NegotiationRound,
    ClosingDocument,
    Forecast,
    KpiSnapshot,
    DirtyDay,
    PendingChange,
    StaleMedian,
    StageSetting,
    RecomputeJob,
    MaturityHorizon,
    HourlyInputs,
    PeriodMeasures,
    LedgerState,
    OpenNow,
    # django-axes records sign-ins; nobody adds them by hand.
    AccessAttempt,
    AccessLog,
    AccessFailureLog,
}

STALE = "Someone else changed this deal in the meantime. Review the current data and try again."


def admin_url(model, view, *args):
    opts = model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


DEALS = admin_url(Deal, "changelist")


def admin_request(rf, user):
    request = rf.get("/admin/")
    request.user = user
    return request


def messages_of(response):
    return [str(m.message) for m in get_messages(response.wsgi_request)]


def browser_data(page):
    """What a browser posts back from a rendered admin add or change page: the main
    form's values as shown, and the management forms of its inlines."""
    forms = [page.context["adminform"].form]
    forms += [inline.formset.management_form for inline in page.context["inline_admin_formsets"]]
    data = {}
    for form in forms:
        for field in form:
            widget = field.field.widget
            if isinstance(widget, MultiWidget):
                parts = widget.decompress(field.value())
                for suffix, sub, part in zip(
                    widget.widgets_names, widget.widgets, parts, strict=True
                ):
                    data[field.html_name + suffix] = sub.format_value(part) or ""
            else:
                data[field.html_name] = widget.format_value(field.value()) or ""
    return data


def titles(client, query=""):
    response = client.get(f"{DEALS}?{query}")
    assert response.status_code == 200, response.get("Location")
    return sorted(deal.title for deal in response.context["cl"].result_list)


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


@pytest.fixture
def one_of_each(rep, team_a):
    """At least one row of every model the admin shows."""
    won = won_deal(rep, title="Won deal")  # offers, history, changes, closing document
    negotiating = deal_in_stage(rep, Stage.NEGOTIATION, title="Negotiating deal")
    domain.add_round(
        negotiating, held_at=days_ago(2), proposed_value=Decimal("9500"), discount_pct=5, by=rep
    )
    domain.log_activity(negotiating, kind="call", held_at=days_ago(1), outcome="Agreed", by=rep)
    ContactFactory(company=won.company, last_name="Nowak")
    channel = ChannelFactory(name="Webinars")
    month = datetime.date(2025, 3, 1)
    ExchangeRate.objects.create(currency="EUR", date=month, rate=Decimal("4.30"))
    MarketingSpend.objects.create(
        channel=channel, month=month, amount=Decimal("1000"), amount_base=Decimal("1000")
    )
    SalesCost.objects.create(
        month=month, team=team_a, amount=Decimal("20000"), amount_base=Decimal("20000")
    )
    Group.objects.create(name="Sales operations")
    Target.objects.create(grain="month", period_start=month, team=team_a, amount=Decimal("50000"))
    Forecast.objects.create(
        grain="month", period_start=month, kind="committed", amount=Decimal("40000")
    )
    KpiSnapshot.objects.create(
        kpi="leads", grain="month", period_start=month, value=2, numerator=2, denominator=1
    )
    DirtyDay.objects.get_or_create(day=month)  # the spend above marked it already
    StaleMedian.objects.create(grain="year", period_start=month.replace(month=1), family="won")
    RecomputeJob.objects.create(parts=3, done=[0], claimed=[month.isoformat()])
    PeriodMeasures.objects.get_or_create(
        grain="month", period_start=month, slice="company", defaults={"sums": {"lead": {"n": 2}}}
    )
    LedgerState.objects.get_or_create(pk=1)
    OpenNow.objects.get_or_create(slice="company", defaults={"stages": {"lead": [1, "10.00", 0]}})
    reading.ensure_maturity()
    company.store_inputs(timezone.now())
    Token.objects.create(user=rep)
    # django-axes's sign-in records (config/settings.py: login brute-force protection).
    attempt = {"username": "rep", "ip_address": "10.0.0.1", "user_agent": "test"}
    AccessAttempt.objects.create(**attempt, failures_since_start=1)
    AccessLog.objects.create(**attempt)
    AccessFailureLog.objects.create(**attempt)


# Every page ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", sorted(admin_site._registry, key=lambda m: m._meta.label), ids=lambda m: m._meta.label
)
def test_every_admin_page_answers_for_the_admin(admin_client, one_of_each, model):
    obj = model._default_manager.order_by("pk").first()
    assert obj is not None, f"add a {model._meta.label} row to the one_of_each fixture"

    changelist = admin_client.get(admin_url(model, "changelist"))
    change = admin_client.get(admin_url(model, "change", obj.pk))
    add = admin_client.get(admin_url(model, "add"))

    assert changelist.status_code == 200
    assert changelist.context["cl"].result_count == model._default_manager.count()
    assert change.status_code == 200
    assert add.status_code == (403 if model in VIEW_ONLY else 200)


def test_the_deal_page_shows_its_related_rows_read_only(admin_client, one_of_each, admin, rf):
    deal = Deal.objects.get(title="Won deal")
    page = admin_client.get(admin_url(Deal, "change", deal.pk))

    assert page.status_code == 200
    request = admin_request(rf, admin)
    shown = {}
    for inline in page.context["inline_admin_formsets"]:
        opts = inline.opts
        assert (
            opts.has_add_permission(request, deal),
            opts.has_change_permission(request, deal),
            opts.has_delete_permission(request, deal),
        ) == (False, False, False)
        shown[opts.model] = len(inline.formset.forms)
    assert shown == {
        ClosingDocument: 1,
        Offer: 1,
        NegotiationRound: 0,
        Activity: 0,
        StageHistory: 7,
        # agreed value and discount; the document's type, number, issue date and final
        # value; its signing
        DealChange: 7,
    }


def test_the_deal_form_makes_stage_status_stamps_and_outcomes_read_only(admin, rf, rep):
    deal = make_deal(rep)
    readonly = admin_site._registry[Deal].get_readonly_fields(admin_request(rf, admin), deal)

    for field in (
        "stage",
        "status",
        "version",
        "current_value_base",
        "won_at",
        "lost_at",
        "lost_reason",
        "lost_stage",
        "lost_note",
        "last_event_at",
        "agreed_value",
        "agreed_value_base",
        "agreed_at",
        "entered_lead_at",
        "entered_qualification_at",
        "entered_needs_at",
        "entered_offer_at",
        "entered_negotiation_at",
        "entered_closing_at",
    ):
        assert field in readonly
    assert set(readonly) & set(domain.EDITABLE_FIELDS) == {"lost_note"}


# Changelist filters and search -------------------------------------------------------------


@pytest.fixture
def assorted_deals(rep, teammate, outsider):
    webinars = ChannelFactory(name="Webinars")
    deal_in_stage(
        rep,
        Stage.OFFER,
        title="Offer A",
        channel=webinars,
        segment="Enterprise",
        industry="Retail",
        company=CompanyFactory(name="Acme S.A."),
        external_id="CRM-17",
    )
    deal_in_stage(teammate, Stage.OFFER, title="Offer B", segment="SMB", industry="Logistics")
    make_deal(rep, title="Lead C", segment="SMB", industry="Logistics")
    lost = deal_in_stage(outsider, Stage.NEEDS, title="Lost D")
    domain.mark_lost(lost, lost_reason("price"), by=outsider)
    won_deal(rep, title="Won E")
    return webinars


def test_deal_changelist_filters_by_stage_status_owner_team_and_lost_reason(
    admin_client, assorted_deals, rep, team_a, team_b
):
    price = lost_reason("price")

    assert titles(admin_client) == ["Lead C", "Lost D", "Offer A", "Offer B", "Won E"]
    assert titles(admin_client, "stage__exact=offer") == ["Offer A", "Offer B"]
    assert titles(admin_client, "status__exact=lost") == ["Lost D"]
    assert titles(admin_client, "status__exact=open&stage__exact=lead") == ["Lead C"]
    assert titles(admin_client, f"owner__id__exact={rep.pk}") == ["Lead C", "Offer A", "Won E"]
    assert titles(admin_client, f"owner__team__id__exact={team_a.pk}") == [
        "Lead C",
        "Offer A",
        "Offer B",
        "Won E",
    ]
    assert titles(admin_client, f"owner__team__id__exact={team_b.pk}") == ["Lost D"]
    assert titles(admin_client, f"lost_reason__id__exact={price.pk}") == ["Lost D"]


def test_deal_changelist_filters_by_channel_segment_and_industry(admin_client, assorted_deals):
    assert titles(admin_client, f"channel__id__exact={assorted_deals.pk}") == ["Offer A"]
    assert titles(admin_client, "segment=Enterprise") == ["Offer A"]
    assert titles(admin_client, "segment=SMB") == ["Lead C", "Offer B"]
    assert titles(admin_client, "industry=Logistics&stage__exact=offer") == ["Offer B"]


def test_deal_changelist_searches_title_company_and_external_id(admin_client, assorted_deals):
    assert titles(admin_client, "q=offer") == ["Offer A", "Offer B"]
    assert titles(admin_client, "q=acme") == ["Offer A"]
    assert titles(admin_client, "q=CRM-17") == ["Offer A"]
    assert titles(admin_client, "q=nothing+like+it") == []


def test_deal_changelist_queries_do_not_grow_with_the_number_of_deals(
    admin_client, rep, teammate, outsider
):
    owners = (rep, teammate, outsider)

    def queries_listing(total):
        for i in range(Deal.objects.count(), total):
            make_deal(owners[i % 3], title=f"Deal {i}", channel=ChannelFactory())
        admin_client.get(DEALS)  # warm the per-process caches
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(DEALS)
        assert len(response.context["cl"].result_list) == total
        return len(queries)

    assert queries_listing(3) == queries_listing(30)


def test_a_staff_manager_sees_only_the_deals_of_their_team(client, manager, rep, outsider):
    manager.is_staff = True
    manager.save()
    manager.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_deal", "change_deal", "view_stagehistory"])
    )
    make_deal(rep, title="Team deal")
    hidden = make_deal(outsider, title="Outsider deal")
    client.force_login(manager)

    history = client.get(admin_url(StageHistory, "changelist"))
    other_deal = client.get(admin_url(Deal, "change", hidden.pk))

    assert titles(client) == ["Team deal"]
    assert [row.deal.title for row in history.context["cl"].result_list] == ["Team deal"]
    assert other_deal.status_code == 302
    assert other_deal["Location"] == reverse("admin:index")


# Transitions as actions --------------------------------------------------------------------


def test_mark_lost_asks_for_a_reason_then_loses_the_open_deals_and_reports_the_closed_one(
    admin_client, admin, rep
):
    lead = make_deal(rep, title="Lead")
    offer = deal_in_stage(rep, Stage.OFFER, title="Offer")
    won = won_deal(rep, title="Won")
    won_version = won.version
    price = lost_reason("price")
    selection = {"action": "mark_lost", "_selected_action": [lead.pk, offer.pk, won.pk]}

    page = admin_client.post(DEALS, selection)

    assert page.status_code == 200
    assert page.templates[0].name == "admin/funnel/deal/mark_lost.html"
    assert sorted(deal.title for deal in page.context["deals"]) == ["Lead", "Offer", "Won"]
    assert list(page.context["form"].fields) == ["reason", "note"]
    assert Deal.objects.filter(status="lost").count() == 0

    done = admin_client.post(
        DEALS, {**selection, "post": "yes", "reason": price.pk, "note": "Budget cut"}
    )

    assert done.status_code == 302
    assert messages_of(done) == [
        "“Won”: This deal is won: a closed deal cannot change stage.",
        "2 deals marked lost.",
    ]
    for deal, stage in ((lead, Stage.LEAD), (offer, Stage.OFFER)):
        deal.refresh_from_db()
        assert (deal.status, deal.stage, deal.lost_stage, deal.lost_reason, deal.lost_note) == (
            "lost",
            stage,
            stage,
            price,
            "Budget cut",
        )
        last = deal.history.last()
        assert (last.event, last.lost_reason, last.note, last.by) == (
            "lost",
            price,
            "Budget cut",
            admin,
        )
    won.refresh_from_db()
    assert (won.status, won.version, won.lost_reason) == ("won", won_version, None)
    assert won.history.filter(event="lost").count() == 0


def test_mark_lost_without_a_reason_shows_the_page_again_and_changes_nothing(admin_client, rep):
    deal = make_deal(rep, title="Lead")

    page = admin_client.post(
        DEALS, {"action": "mark_lost", "_selected_action": [deal.pk], "post": "yes"}
    )

    assert page.status_code == 200
    assert page.context["form"].errors == {"reason": ["This field is required."]}
    deal.refresh_from_db()
    assert (deal.status, deal.history.count()) == ("open", 1)


def test_mark_lost_offers_only_active_lost_reasons(admin_client, rep):
    deal = make_deal(rep)
    retired = lost_reason("timing")
    retired.is_active = False
    retired.save()

    page = admin_client.post(DEALS, {"action": "mark_lost", "_selected_action": [deal.pk]})
    chosen = admin_client.post(
        DEALS,
        {"action": "mark_lost", "_selected_action": [deal.pk], "post": "yes", "reason": retired.pk},
    )

    assert retired not in page.context["form"].fields["reason"].queryset
    assert list(chosen.context["form"].errors) == ["reason"]
    deal.refresh_from_db()
    assert deal.status == "open"


def test_disqualify_loses_a_lead_at_qualification_as_not_qualified(admin_client, admin, rep):
    lead = make_deal(rep, title="Cold lead")
    offer = deal_in_stage(rep, Stage.OFFER, title="Warm deal")
    selection = {"action": "disqualify", "_selected_action": [lead.pk, offer.pk]}

    page = admin_client.post(DEALS, selection)
    done = admin_client.post(DEALS, {**selection, "post": "yes", "note": "Wrong country"})

    assert page.status_code == 200
    assert list(page.context["form"].fields) == ["note"]
    assert messages_of(done) == [
        "“Warm deal”: Only a lead in qualification can be disqualified; mark it lost instead.",
        "1 lead disqualified.",
    ]
    lead.refresh_from_db()
    assert (lead.status, lead.stage, lead.lost_reason.code, lead.lost_note) == (
        "lost",
        "qualification",
        "not_qualified",
        "Wrong country",
    )
    assert [(h.event, h.to_stage, h.by) for h in lead.history.all()] == [
        ("created", "lead", rep),
        ("moved", "qualification", admin),
        ("lost", "qualification", admin),
    ]
    offer.refresh_from_db()
    assert offer.status == "open"


def test_reopen_action_reopens_a_lost_deal_and_reports_an_open_one(admin_client, admin, rep):
    lost = deal_in_stage(rep, Stage.NEEDS, title="Lost deal")
    domain.mark_lost(lost, lost_reason("timing"), by=rep)
    still_open = make_deal(rep, title="Open deal")

    done = admin_client.post(
        DEALS, {"action": "reopen", "_selected_action": [lost.pk, still_open.pk]}
    )

    assert done.status_code == 302
    assert messages_of(done) == [
        "“Open deal”: Only a lost deal can be reopened.",
        "1 deal reopened.",
    ]
    lost.refresh_from_db()
    assert (lost.status, lost.stage, lost.lost_reason, lost.lost_stage) == (
        "open",
        "needs",
        None,
        None,
    )
    assert [(h.event, h.by) for h in lost.history.all()][-2:] == [
        ("lost", rep),
        ("reopened", admin),
    ]
    still_open.refresh_from_db()
    assert (still_open.status, still_open.history.count()) == ("open", 1)


def test_reopen_is_offered_to_managers_and_admins_only(rf, admin, manager, rep):
    editing = Permission.objects.filter(codename__in=["view_deal", "change_deal"])
    for user in (manager, rep):
        user.is_staff = True
        user.save()
        user.user_permissions.add(*editing)
    deal_admin = admin_site._registry[Deal]

    def actions(user):
        user = User.objects.get(pk=user.pk)  # no cached permissions
        return sorted(deal_admin.get_actions(admin_request(rf, user)))

    assert actions(admin) == ["disqualify", "mark_lost", "reopen"]
    assert actions(manager) == ["disqualify", "mark_lost", "reopen"]
    assert actions(rep) == ["disqualify", "mark_lost"]


# Adding and editing through the domain -------------------------------------------------------


def test_adding_a_deal_in_the_admin_creates_it_through_the_domain(admin_client, admin, rep):
    company = CompanyFactory(name="Acme S.A.")
    page = admin_client.get(admin_url(Deal, "add"))
    data = browser_data(page)
    data.update(
        title="New lead",
        company=company.pk,
        owner=rep.pk,
        estimated_value="5000.00",
        segment="SMB",
    )

    response = admin_client.post(admin_url(Deal, "add"), data)

    assert response.status_code == 302
    deal = Deal.objects.get(title="New lead")
    assert (deal.stage, deal.status, deal.owner, deal.created_by, deal.segment) == (
        "lead",
        "open",
        rep,
        admin,
        "SMB",
    )
    assert (deal.estimated_value_base, deal.current_value_base) == (
        Decimal("5000.00"),
        Decimal("5000.00"),
    )
    assert [(h.event, h.to_stage, h.by) for h in deal.history.all()] == [("created", "lead", admin)]


def test_adding_a_deal_whose_first_touch_follows_the_lead_is_a_field_error(admin_client):
    company = CompanyFactory(name="Acme S.A.")
    data = browser_data(admin_client.get(admin_url(Deal, "add")))
    data.update(
        {
            "title": "Backdated lead",
            "company": company.pk,
            "entered_lead_at_0": days_ago(5).date().isoformat(),
            "entered_lead_at_1": "12:00:00",
            "first_touch_at_0": days_ago(2).date().isoformat(),
            "first_touch_at_1": "12:00:00",
        }
    )

    response = admin_client.post(admin_url(Deal, "add"), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "first_touch_at": ["The first marketing touch cannot follow the lead's creation."]
    }
    assert Deal.objects.count() == 0


def test_editing_a_deal_on_the_change_form_records_the_change(admin_client, admin, rep):
    deal = deal_in_stage(rep, Stage.NEEDS, title="Edited deal")
    url = admin_url(Deal, "change", deal.pk)
    data = browser_data(admin_client.get(url))
    data["estimated_value"] = "12500.00"

    response = admin_client.post(url, data)

    assert response.status_code == 302
    assert response["Location"] == DEALS
    before = deal.version
    deal.refresh_from_db()
    assert (deal.estimated_value, deal.current_value_base, deal.version) == (
        Decimal("12500.00"),
        Decimal("12500.00"),
        before + 1,
    )
    assert list(deal.changes.values_list("field", "old_value", "new_value", "by")) == [
        ("estimated_value", "10000.00", "12500.00", admin.pk)
    ]


def test_a_stale_change_form_is_refused_and_changes_nothing(admin_client, admin, rep):
    deal = deal_in_stage(rep, Stage.NEEDS, title="Contested deal")
    url = admin_url(Deal, "change", deal.pk)
    data = browser_data(admin_client.get(url))
    loaded = deal.version
    domain.update_deal(deal, by=rep, estimated_value=Decimal("11000.00"))  # someone else
    data.update(title="Renamed", estimated_value="12500.00")

    response = admin_client.post(url, data)

    assert response.status_code == 302
    assert response["Location"] == url
    assert messages_of(response) == [STALE]
    deal.refresh_from_db()
    assert (deal.title, deal.estimated_value, deal.version) == (
        "Contested deal",
        Decimal("11000.00"),
        loaded + 1,
    )
    assert list(deal.changes.values_list("field", "old_value", "new_value", "by")) == [
        ("estimated_value", "10000.00", "11000.00", rep.pk)
    ]
    assert LogEntry.objects.filter(object_id=str(deal.pk)).count() == 0


def test_a_change_the_domain_refuses_is_reported_and_changes_nothing(admin_client, rep):
    ExchangeRate.objects.create(currency="EUR", date=days_ago(400).date(), rate=Decimal("4.30"))
    deal = deal_in_stage(rep, Stage.OFFER, title="Offer deal")
    domain.start_offer(deal, value=Decimal("9000"), by=rep)  # locks the deal's currency
    url = admin_url(Deal, "change", deal.pk)
    data = browser_data(admin_client.get(url))
    data.update(currency="EUR", title="Renamed")
    version = deal.version

    response = admin_client.post(url, data)

    assert response.status_code == 302
    assert messages_of(response) == [
        "Currency: The currency cannot change once offers or terms were recorded in it."
    ]
    deal.refresh_from_db()
    assert (deal.currency, deal.title, deal.version, deal.changes.count()) == (
        "PLN",
        "Offer deal",
        version,
        0,
    )


def test_a_contact_of_another_company_is_a_field_error(admin_client, rep):
    deal = make_deal(rep, title="Lead")
    stranger = ContactFactory(company=CompanyFactory(name="Elsewhere"))
    url = admin_url(Deal, "change", deal.pk)
    data = browser_data(admin_client.get(url))
    data["contact"] = stranger.pk
    version = deal.version

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "contact": ["The contact works for another company."]
    }
    deal.refresh_from_db()
    assert (deal.contact, deal.version) == (None, version)


# History is append-only ------------------------------------------------------------------


@pytest.mark.parametrize("model", [StageHistory, DealChange], ids=lambda m: m.__name__)
def test_history_rows_cannot_be_added_changed_or_deleted_in_the_admin(
    admin_client, admin, rep, rf, model
):
    deal = won_deal(rep)
    row = model.objects.filter(deal=deal).first()
    rows = model.objects.count()
    model_admin = admin_site._registry[model]
    request = admin_request(rf, admin)

    add = admin_client.post(admin_url(model, "add"), {})
    change = admin_client.post(admin_url(model, "change", row.pk), {"note": "rewritten"})
    delete = admin_client.post(admin_url(model, "delete", row.pk), {"post": "yes"})

    assert (
        model_admin.has_add_permission(request),
        model_admin.has_change_permission(request, row),
        model_admin.has_delete_permission(request, row),
    ) == (False, False, False)
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert model.objects.count() == rows
    assert model.objects.get(pk=row.pk).at == row.at


def test_deals_cannot_be_deleted_in_the_admin(admin_client, rep):
    deal = make_deal(rep)

    response = admin_client.post(admin_url(Deal, "delete", deal.pk), {"post": "yes"})

    assert response.status_code == 403
    assert Deal.objects.filter(pk=deal.pk).count() == 1


# Spend and sales cost in the base currency ---------------------------------------------------


def test_marketing_spend_is_converted_at_the_rate_of_its_month(admin_client):
    channel = ChannelFactory(name="Trade fairs")
    ExchangeRate.objects.create(
        currency="EUR", date=datetime.date(2025, 2, 20), rate=Decimal("4.25")
    )

    response = admin_client.post(
        admin_url(MarketingSpend, "add"),
        {"channel": channel.pk, "month": "2025-03-17", "amount": "1000.00", "currency": "EUR"},
    )

    assert response.status_code == 302
    spend = MarketingSpend.objects.get()
    assert (spend.month, spend.amount, spend.amount_base) == (
        datetime.date(2025, 3, 1),
        Decimal("1000.00"),
        Decimal("4250.00"),
    )


def test_marketing_spend_without_an_exchange_rate_is_a_field_error(admin_client):
    channel = ChannelFactory(name="Trade fairs")

    response = admin_client.post(
        admin_url(MarketingSpend, "add"),
        {"channel": channel.pk, "month": "2025-03-01", "amount": "1000.00", "currency": "USD"},
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "currency": ["No exchange rate for USD on or before 2025-03-01."]
    }
    assert MarketingSpend.objects.count() == 0


def test_sales_cost_is_stored_in_the_base_currency(admin_client, team_a):
    url = admin_url(SalesCost, "add")

    in_pln = admin_client.post(
        url, {"month": "2025-04-30", "team": team_a.pk, "amount": "30000.00", "currency": "PLN"}
    )
    in_usd = admin_client.post(url, {"month": "2025-04-01", "amount": "100", "currency": "USD"})

    assert in_pln.status_code == 302
    assert list(SalesCost.objects.values_list("month", "team", "amount_base")) == [
        (datetime.date(2025, 4, 1), team_a.pk, Decimal("30000.00"))
    ]
    assert in_usd.context["adminform"].form.errors == {
        "currency": ["No exchange rate for USD on or before 2025-04-01."]
    }
