"""The demo year (``manage.py seed_demo``, funnel/demo.py): the bulk executor writes
exactly what the domain functions write, the same seed gives the same data, and the
data looks like a year of sales: every stage and outcome, plausible drop-off, every
moment in the past and in order."""

import datetime
from collections import Counter
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from accounts.models import Role, Team, User
from funnel import demo, domain, stages
from funnel.models import (
    Activity,
    Channel,
    ClosingDocument,
    Company,
    Contact,
    Deal,
    DealChange,
    ExchangeRate,
    LostReason,
    MarketingSpend,
    NegotiationRound,
    Offer,
    SalesCost,
    StageHistory,
)
from funnel.stages import Stage, Status
from kpis.company import store_inputs
from kpis.models import DirtyDay, Forecast, ForecastKind, HourlyInputs, Target

pytestmark = pytest.mark.django_db

UNTIL = datetime.date(2025, 6, 30)
#: small enough for the domain executor, and this seed's plan takes every path
#: (test_the_comparison_covers_every_path_the_plan_can_take)
COMPARED_DEALS, COMPARED_SEED = 50, 48


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def seed(deals=400, seed=1, executor="bulk"):
    started = timezone.now()
    result = demo.seed_demo(deals=deals, seed=seed, until=UNTIL, executor=executor)
    result.run = (started, timezone.now())
    return result


def dump(run, *, comparable_with_domain=False):
    """Everything the seeder wrote, in a deterministic order, with auto ids left out and
    foreign keys replaced by natural keys (usernames, names, external ids...).

    Deal.updated_at is the wall clock of the write on both paths. So is the entered_at
    of every history and change-log row: it is checked to lie within ``run`` (the
    seeding's start and end) instead of compared. With ``comparable_with_domain``, so is
    the moment of the closing document's changes that ``domain.save_closing_document``
    records (it takes no moment)."""
    started, ended = run
    usernames = dict(User.objects.values_list("id", "username"))
    companies = dict(Company.objects.values_list("id", "name"))
    contacts, positions = {}, Counter()
    for pk, company in Contact.objects.order_by("id").values_list("id", "company_id"):
        contacts[pk] = (companies[company], positions[company])
        positions[company] += 1
    keys = {
        "owner_id": usernames,
        "created_by_id": usernames,
        "sent_by_id": usernames,
        "responded_by_id": usernames,
        "by_id": usernames,
        "manager_id": usernames,
        "rep_id": usernames,
        "set_by_id": usernames,
        "entered_by_id": usernames,
        "team_id": dict(Team.objects.values_list("id", "name")),
        "company_id": companies,
        "contact_id": contacts,
        "channel_id": dict(Channel.objects.values_list("id", "name")),
        "lost_reason_id": dict(LostReason.objects.values_list("id", "code")),
        "deal_id": dict(Deal.objects.values_list("id", "external_id")),
    }

    def table(model, *order, exclude=()):
        rows = []
        for row in model.objects.order_by(*order).values():
            for name in ("id", *exclude):
                del row[name]
            for name, natural in keys.items():
                if row.get(name) is not None:
                    row[name] = natural[row[name]]
            rows.append(row)
        return rows

    changes = table(DealChange, "deal__external_id", "id")
    history = table(StageHistory, "deal__external_id", "id")
    for row in (*history, *changes):
        assert started <= row["entered_at"] <= ended, (started, row, ended)
        row["entered_at"] = "during the run"
    if comparable_with_domain:
        for change in changes:
            if change["field"] in domain.DOCUMENT_TRACKED_FIELDS:
                del change["at"]
    return {
        "users": table(User, "username", exclude=("password", "last_login")),
        "teams": table(Team, "name"),
        "channels": table(Channel, "name"),
        "companies": table(Company, "name"),
        "contacts": table(Contact, "company__name", "id"),
        "spend": table(MarketingSpend, "channel__name", "month"),
        "costs": table(SalesCost, "month", "team__name", "note"),
        "rates": table(ExchangeRate, "currency", "date"),
        "targets": table(Target, "period_start", "team__name", "rep__username"),
        "forecasts": table(Forecast, "period_start", "team__name"),
        "deals": table(Deal, "external_id", exclude=("updated_at",)),
        "history": history,
        "offers": table(Offer, "deal__external_id", "version"),
        "rounds": table(NegotiationRound, "deal__external_id", "number"),
        "activities": table(Activity, "deal__external_id", "id"),
        "documents": table(ClosingDocument, "deal__external_id"),
        "changes": changes,
        # The days whose KPIs are now stale, as the domain functions mark them.
        "dirty_days": sorted(DirtyDay.objects.values_list("day", flat=True)),
    }


def delete_deals():
    Deal.objects.all().delete()
    DirtyDay.objects.all().delete()


def delete_everything():
    delete_deals()
    reference = (MarketingSpend, SalesCost, ExchangeRate, Target, Forecast)
    for model in (*reference, Contact, Company, Channel, Team):
        model.objects.all().delete()
    User.objects.all().delete()


# The two executors ---------------------------------------------------------------------


def test_the_bulk_executor_writes_exactly_what_the_domain_functions_write():
    run = seed(COMPARED_DEALS, COMPARED_SEED, executor="domain").run
    by_domain = dump(run, comparable_with_domain=True)
    delete_deals()
    run = seed(COMPARED_DEALS, COMPARED_SEED, executor="bulk").run
    by_bulk = dump(run, comparable_with_domain=True)

    assert len(by_domain["deals"]) == COMPARED_DEALS
    # The domain functions took every path the comparison claims to cover.
    assert {row["event"] for row in by_domain["history"]} == {
        "created",
        "moved",
        "skipped",
        "lost",
        "reopened",
        "won",
    }
    assert {row["status"] for row in by_domain["offers"]} >= {
        "sent",
        "accepted",
        "rejected",
        "superseded",
    }
    assert {row["field"] for row in by_domain["changes"]} == {
        "agreed_value",
        "discount_pct",
        "document_type",
        "number",
        "issue_date",
        "final_value",
        "signed_at",
        "paid_at",
    }
    for name in by_domain:
        assert by_bulk[name] == by_domain[name], name


def paths(plan):
    """The kinds of step, and the paths through the funnel, that ``plan`` takes."""
    taken = set()
    for deal in plan.deals():
        stage = Stage.LEAD
        for step in deal.steps:
            taken.add(step.action)
            if step.action == demo.CREATE:
                taken.add(step.args["currency"])
            elif step.action == demo.SAVE_DOCUMENT:
                taken.add(step.args["document_type"])
            elif step.action == demo.START_OFFER and step.args["notes"]:  # a new version
                taken.add("revision")
            elif step.action in (demo.MARK_LOST, demo.DISQUALIFY, demo.REOPEN):
                taken.add(f"{step.action} at {stage}")
            elif step.action == demo.MOVE:
                skipped = stages.between(stage, step.args["stage"])
                taken.update(f"skip {s}" for s in skipped)
                stage = step.args["stage"]
            if step.action == demo.DISQUALIFY:
                stage = Stage.QUALIFICATION
    return taken


def test_the_comparison_covers_every_path_the_plan_can_take():
    taken = paths(demo.DemoPlan(deals=COMPARED_DEALS, seed=COMPARED_SEED, until=UNTIL))

    assert taken >= {
        demo.CREATE,
        demo.MOVE,
        demo.START_OFFER,
        demo.SEND_OFFER,
        demo.ACCEPT_OFFER,
        demo.REJECT_OFFER,
        demo.ADD_ROUND,
        demo.AGREE_TERMS,
        demo.SAVE_DOCUMENT,
        demo.WIN,
        demo.LOG_ACTIVITY,
        "PLN",
        "EUR",
        "contract",
        "proforma",
        "revision",
        *(f"mark_lost at {stage}" for stage in Stage),
        "disqualify at lead",
        "disqualify at qualification",
        "reopen at offer",
        "reopen at negotiation",
        "skip qualification",
        "skip needs",
        "skip negotiation",
    }


@pytest.mark.postgres
def test_a_large_load_sets_indexes_and_keys_aside_and_rebuilds_them_as_they_were(
    on_postgres, monkeypatch
):
    def schema():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename LIKE %s ORDER BY 1", ["funnel_%"]
            )
            indexes = cursor.fetchall()
            cursor.execute(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
                " FROM pg_constraint WHERE conrelid::regclass::text LIKE %s ORDER BY 1, 2",
                ["funnel_%"],
            )
            return indexes, cursor.fetchall()

    before = schema()
    row_by_row = dump(seed(100).run)
    delete_deals()
    monkeypatch.setattr(demo, "SET_ASIDE_FROM_DEALS", 100)
    run = seed(100).run

    assert dump(run) == row_by_row
    assert schema() == before


# Determinism ---------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_data():
    first = dump(seed(150, seed=3).run)
    delete_everything()
    run = seed(150, seed=3).run

    assert dump(run) == first


def test_another_seed_or_anchor_gives_another_plan():
    def steps(**kwargs):
        plan = demo.DemoPlan(deals=20, **{"seed": 3, "until": UNTIL, **kwargs})
        return [deal.steps for deal in plan.deals()]

    assert steps() == steps()
    assert steps(seed=4) != steps()
    later = steps(until=UNTIL + datetime.timedelta(days=7))
    assert later != steps()
    assert later[0][0].at == steps()[0][0].at + datetime.timedelta(days=7)


def test_a_second_load_after_deleting_the_deals_reuses_the_reference_data():
    seed(50)
    companies, contacts, users = (
        Company.objects.count(),
        Contact.objects.count(),
        User.objects.count(),
    )
    delete_deals()
    seed(50)

    assert (Company.objects.count(), Contact.objects.count(), User.objects.count()) == (
        companies,
        contacts,
        users,
    )
    assert Deal.objects.count() == 50


# A plausible year ----------------------------------------------------------------------


def test_every_stage_status_owner_channel_and_month_is_represented():
    seed(400)

    assert set(Deal.objects.values_list("stage", flat=True)) == set(Stage.values)
    assert set(Deal.objects.values_list("status", flat=True)) == set(Status.values)
    assert set(Deal.objects.open().values_list("stage", flat=True)) == set(Stage.values)
    assert set(Deal.objects.lost().values_list("lost_stage", flat=True)) == set(Stage.values)
    assert set(Deal.objects.values_list("owner__username", flat=True)) == set(demo.REP_WEIGHTS)
    assert Deal.objects.values("channel").distinct().count() == len(demo.CHANNELS)
    months = {moment.month for moment in Deal.objects.values_list("entered_lead_at", flat=True)}
    assert len(months) == 12


def test_drop_off_is_plausible_and_recent_deals_are_still_open():
    seed(1000)
    reached = [
        Deal.objects.filter(**{f"{stages.stamp_field(stage)}__isnull": False}).count()
        for stage in Stage
    ]
    won = Deal.objects.won().count()

    assert reached[0] == 1000
    assert reached == sorted(reached, reverse=True) and len(set(reached)) == len(reached)
    assert 0.5 < reached[2] / reached[0] < 0.7  # leads that qualify to needs
    assert 0.6 < reached[3] / reached[2] < 0.8  # needs that get an offer
    assert 0.35 < reached[5] / reached[3] < 0.6  # offers that reach closing
    assert 0.8 < won / reached[5] < 0.95  # closings won
    assert Deal.objects.filter(lost_reason__code="not_qualified").count() > 50
    assert Deal.objects.filter(lost_stage="offer", lost_reason__code="price").exists()
    assert StageHistory.objects.filter(event="reopened").count() >= 3
    recent = Deal.objects.filter(
        entered_lead_at__gte=datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)
    )
    assert recent.open().count() > recent.count() * 0.6
    a_year_ago = Deal.objects.filter(
        entered_lead_at__lt=datetime.datetime(2024, 9, 1, tzinfo=datetime.UTC)
    )
    assert a_year_ago.open().count() < a_year_ago.count() * 0.1  # stalled ones only


def test_every_moment_lies_in_the_past_and_in_order():
    end = seed(300).plan.end
    deals = Deal.objects.select_related("closing_document").prefetch_related(
        "history", "offers", "rounds", "activities", "changes"
    )

    for deal in deals:
        assert deal.first_touch_at < deal.entered_lead_at
        moments = [h.at for h in sorted(deal.history.all(), key=lambda h: h.pk)]
        assert moments == sorted(moments)
        # Agreeing terms is the one event without a history row.
        assert max(moments[-1], deal.agreed_at or moments[-1]) == deal.last_event_at < end
        for offer in deal.offers.all():
            assert deal.entered_offer_at <= offer.prep_started_at < end
            if offer.sent_at:
                assert offer.prep_started_at <= offer.sent_at < end
            if offer.responded_at:
                assert offer.sent_at <= offer.responded_at < end
        for round_ in deal.rounds.all():
            assert deal.entered_negotiation_at <= round_.held_at < end
        for activity in deal.activities.all():
            assert deal.entered_lead_at <= activity.held_at < end
        for change in deal.changes.all():
            assert deal.entered_offer_at <= change.at < end
        document = getattr(deal, "closing_document", None)
        if document:
            assert deal.entered_closing_at.date() <= document.issue_date < end.date()
        if deal.status == Status.WON:
            assert document.issue_date <= deal.won_at.date()
            assert deal.current_value_base == document.final_value_base
        deal.clean_fields(
            exclude=["company", "contact", "channel", "owner", "created_by", "lost_reason"]
        )


def test_qualified_deals_carry_their_qualification_answers():
    seed(200)

    for deal in Deal.objects.opportunities():
        assert deal.heard_from and deal.contact_prompt and deal.product_scope
        assert deal.industry and deal.segment
        assert 55 <= deal.qualification_score <= 95
        assert deal.expected_close_date > deal.entered_needs_at.date()
    disqualified = Deal.objects.filter(lost_reason__code="not_qualified")
    assert disqualified and all(d.qualification_score < 50 for d in disqualified)


def test_the_cast_spend_costs_and_rates_cover_the_year():
    plan = seed(30).plan
    months = list(plan.months())

    assert len(months) == 13  # 2024-06-30 to 2025-06-29 touches June twice
    assert MarketingSpend.objects.count() == len(months) * len(demo.CHANNELS)
    for team in Team.objects.all():
        assert set(team.sales_costs.values_list("month", flat=True)) == set(months)
    rates = ExchangeRate.objects.filter(currency="EUR")
    assert rates.earliest("date").date < plan.start.date()
    assert all(4 < rate < 4.7 for rate in rates.values_list("rate", flat=True))
    # Spend was bulk-inserted: its months' KPIs are marked stale as a save would.
    assert DirtyDay.objects.filter(day=months[0]).exists()
    north = Team.objects.get(name="Północ")
    assert north.manager.username == "anna.manager"
    reps = north.members.filter(role=Role.REP).values_list("username", flat=True)
    assert sorted(reps) == ["ewa.rep", "jan.rep", "kasia.rep"]
    admin = User.objects.get(username="admin")
    assert (admin.role, admin.is_staff, admin.is_superuser) == (Role.ADMIN, True, True)
    assert authenticate(username="ola.rep", password="lejek-demo") is not None


def test_every_rep_team_and_the_company_has_a_target_and_a_committed_forecast_each_month():
    plan = seed(30).plan
    months = list(plan.months())
    north, south = Team.objects.get(name="Północ"), Team.objects.get(name="Południe")

    assert Target.objects.count() == len(months) * (6 + 2 + 1)
    for month in months:
        targets = Target.objects.filter(grain="month", period_start=month)
        reps = {t.rep.username: t.amount for t in targets.filter(rep__isnull=False)}
        assert sorted(reps) == sorted(demo.REP_WEIGHTS)
        assert all(amount > 0 and amount % 5000 == 0 for amount in reps.values())
        team = {t.team_id: t.amount for t in targets.filter(team__isnull=False)}
        assert team == {
            north.pk: sum(reps[u] for u in ("ewa.rep", "jan.rep", "kasia.rep")),
            south.pk: sum(reps[u] for u in ("marek.rep", "ola.rep", "tomek.rep")),
        }
        company = targets.get(team__isnull=True, rep__isnull=True)
        assert company.amount == sum(team.values())
        assert company.set_by.username == "admin"
        assert targets.get(rep__username="ola.rep").set_by.username == "piotr.manager"
    # The year starts with an empty funnel: its first month's targets are a quarter of
    # the fourth's, give or take the reps' spread (0.9 to 1.25).
    first, fourth = (
        Target.objects.get(period_start=months[i], team=None, rep=None).amount for i in (0, 3)
    )
    assert fourth * 9 / 50 <= first <= fourth * 25 / 72

    # A forecast for every month that begins inside the year (not the first: it began
    # before), entered three days before it began by the team's manager or the admin.
    forecasts = Forecast.objects.all()
    assert forecasts.count() == (len(months) - 1) * 3
    assert set(forecasts.values_list("kind", flat=True)) == {ForecastKind.COMMITTED}
    for forecast in forecasts:
        start = datetime.datetime.combine(
            forecast.period_start, datetime.time(), tzinfo=timezone.get_default_timezone()
        )
        assert forecast.entered_at == start - datetime.timedelta(days=3, hours=-16)
        who = {None: "admin", north.pk: "anna.manager", south.pk: "piotr.manager"}
        assert forecast.entered_by.username == who[forecast.team_id]
        target = Target.objects.get(
            period_start=forecast.period_start, team_id=forecast.team_id, rep=None
        )
        assert target.amount * 8 / 10 - 5000 <= forecast.amount <= target.amount * 11 / 10 + 5000


# The command ---------------------------------------------------------------------------


def test_the_command_loads_the_demo_year_and_prints_a_summary():
    out = StringIO()
    call_command("seed_demo", "--deals=50", "--seed=2", "--until=2025-06-30", stdout=out)

    assert Deal.objects.count() == 50
    lines = out.getvalue().splitlines()
    assert "50 deals" in lines[0] and "bulk executor" in lines[0]
    assert lines[1].startswith("Users: 1 admin, 2 manager, 6 rep")
    assert lines[2].split() == ["stage", "open", "won", "lost"]
    assert [line.split()[0] for line in lines[3:]] == [*Stage.values, "all"]
    assert sum(map(int, lines[-1].split()[1:])) == 50


def test_if_empty_does_nothing_when_deals_exist():
    call_command("seed_demo", "--deals=30", "--until=2025-06-30", stdout=StringIO())
    out = StringIO()
    call_command("seed_demo", "--deals=30", "--until=2025-06-30", "--if-empty", stdout=out)

    assert Deal.objects.count() == 30
    assert "already holds deals" in out.getvalue()


def test_without_if_empty_the_command_refuses_to_add_to_existing_deals():
    call_command("seed_demo", "--deals=30", "--until=2025-06-30", stdout=StringIO())

    with pytest.raises(CommandError, match="already holds 30 deals"):
        call_command("seed_demo", "--deals=30", "--until=2025-06-30", stdout=StringIO())
    assert Deal.objects.count() == 30


def test_the_slow_option_runs_the_domain_functions():
    out = StringIO()
    call_command("seed_demo", "--deals=5", "--until=2025-06-30", "--slow", stdout=out)

    assert "domain executor" in out.getvalue()
    assert Deal.objects.count() == 5


def test_until_cannot_lie_in_the_future():
    later = (datetime.date.today() + datetime.timedelta(days=2)).isoformat()

    with pytest.raises(CommandError, match="later than today"):
        call_command("seed_demo", f"--until={later}", stdout=StringIO())
    assert not Deal.objects.exists()


@pytest.mark.parametrize("executor", ["bulk", "domain"])
def test_a_load_drops_the_hours_trailing_statistics(executor):
    store_inputs(timezone.now())
    seed(30, executor=executor)
    # The next recompute takes them again, from the loaded deals.
    assert not HourlyInputs.objects.exists()
