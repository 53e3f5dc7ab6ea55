"""KPIs stay fresh: dirty marks written with each change, recomputed by the real task
code, through a real Celery worker on a real redis-server."""

import datetime
import time
from decimal import Decimal

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.management import call_command
from django.db import transaction

from config.celery import app
from funnel import domain
from funnel.stages import Stage
from kpis import company, dirty, recompute
from kpis.models import DirtyDay, KpiSnapshot
from kpis.periods import Period, hour_of, local_date, today
from tests.factories import days_ago, deal_in_stage, lost_reason, make_deal, won_deal
from tests.kpis.builders import snapshot_rows


def marked_days():
    return set(DirtyDay.objects.values_list("day", flat=True))


def stored(code, grain="month", day=None, slice_key="company"):
    period = Period.containing(grain, day or today())
    snap = KpiSnapshot.objects.filter(
        kpi=code, grain=grain, period_start=period.start, slice=slice_key, breakdown=""
    ).first()
    return None if snap is None else snap.value


def test_a_transition_marks_the_days_of_its_deal_dirty_in_its_transaction(rep):
    deal = make_deal(rep, at=days_ago(40))
    DirtyDay.objects.all().delete()
    domain.move_forward(deal, Stage.QUALIFICATION, by=rep, at=days_ago(30))
    # Its stamps, and every day from the back-dated move to today (the company KPIs
    # looking at a moment: open opportunities at a period's start, active reps...).
    since_move = {local_date(days_ago(d)) for d in range(31)}
    assert marked_days() == {local_date(days_ago(40))} | since_move
    # A deal's marks: only the slices whose ledger rows it changes are recomputed.
    assert set(DirtyDay.objects.values_list("whole", flat=True)) == {False}


def test_a_transition_entered_now_marks_its_stamps_and_today(rep):
    deal = make_deal(rep, at=days_ago(40))
    DirtyDay.objects.all().delete()
    domain.move_forward(deal, Stage.QUALIFICATION, by=rep)
    assert marked_days() == {local_date(days_ago(40)), today()}


def test_a_refused_transition_marks_nothing(rep):
    deal = make_deal(rep, at=days_ago(40))
    DirtyDay.objects.all().delete()
    with pytest.raises(domain.DomainError):
        domain.move_forward(deal, Stage.NEGOTIATION, by=rep, at=days_ago(30))
    assert marked_days() == set()


def test_reopening_marks_the_day_of_the_loss_it_undoes(rep, manager):
    deal = make_deal(rep, at=days_ago(40))
    domain.mark_lost(deal, lost_reason("price"), by=rep, at=days_ago(35))
    DirtyDay.objects.all().delete()
    domain.reopen(deal, by=manager, at=days_ago(5))
    assert marked_days() == {local_date(days_ago(d)) for d in (40, *range(36))}


def test_recomputing_dirty_days_updates_snapshots_and_clears_the_marks(rep):
    make_deal(rep, at=days_ago(1))
    assert recompute.recompute_all_dirty() >= 1
    assert DirtyDay.objects.count() == 0
    assert stored("leads", day=local_date(days_ago(1))) == 1
    make_deal(rep, at=days_ago(1))
    recompute.recompute_all_dirty()
    assert stored("leads", day=local_date(days_ago(1))) == 2


def test_a_mark_made_while_its_day_is_recomputed_survives_the_recompute(rep):
    make_deal(rep, at=days_ago(1))
    claimed = dirty.claim(100)
    make_deal(rep, at=days_ago(1))  # marks the same days again, mid-recompute
    recompute.recompute_days([day for day, _ in claimed])
    dirty.release(claimed)
    assert local_date(days_ago(1)) in marked_days()
    assert DirtyDay.objects.filter(claimed_until__isnull=False).count() == 0
    recompute.recompute_all_dirty()
    assert stored("leads", day=local_date(days_ago(1))) == 2


def test_claimed_marks_are_not_taken_by_a_second_worker_until_the_lease_expires(rep):
    make_deal(rep, at=days_ago(1))
    first = dirty.claim(100)
    assert first
    assert dirty.claim(100) == []
    DirtyDay.objects.update(claimed_until=days_ago(1))  # the first worker died
    assert sorted(dirty.claim(100)) == sorted(first)


def test_recomputing_twice_writes_the_same_rows(rep):
    deal_in_stage(rep, Stage.NEGOTIATION)
    recompute.recompute_all()
    first = sorted(
        KpiSnapshot.objects.values_list(
            "kpi", "grain", "period_start", "slice", "breakdown", "value"
        )
    )
    recompute.recompute_all()
    second = sorted(
        KpiSnapshot.objects.values_list(
            "kpi", "grain", "period_start", "slice", "breakdown", "value"
        )
    )
    assert first == second
    assert len(first) > 100


def test_spend_saved_marks_every_day_of_its_month(db):
    from funnel.models import Channel, MarketingSpend

    channel = Channel.objects.create(name="Ads")
    DirtyDay.objects.all().delete()
    MarketingSpend.objects.create(
        channel=channel,
        month=datetime.date(2025, 2, 1),
        amount=Decimal(10),
        amount_base=Decimal(10),
    )
    assert len(marked_days()) == 28
    # Spend moves the cost KPIs of its channel and the company: every slice recomputes.
    assert set(DirtyDay.objects.values_list("whole", flat=True)) == {True}


def test_show_kpis_prints_json_keyed_by_kpi_code(rep, capsys):
    deal_in_stage(rep, Stage.OFFER)
    period = Period.containing("month", local_date(days_ago(60)))
    call_command("show_kpis", "--grain", "month", "--period", period.label, "--json")
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["leads"] == {"value": 1, "numerator": 1, "denominator": None}
    assert out["channel_conversion"] == {"lead_quality_pct": 100, "sales_conversion_pct": 0}
    assert "lead_quality_pct" in out and "win_rate_pct" in out and "clv" in out


def test_a_recent_cohort_is_flagged_immature_and_an_old_one_is_not(rep):
    make_deal(rep, at=days_ago(1))
    recompute.recompute_all_dirty()
    from kpis import reading

    recent = Period.containing("month", today())
    old = Period.containing("month", local_date(days_ago(400)))
    assert reading.kpi_values("month", recent)["lead_quality_pct"]["immature"] is True
    assert reading.kpi_values("month", old)["lead_quality_pct"]["immature"] is False
    assert reading.kpi_values("month", recent)["leads"]["immature"] is False  # event KPI


def test_zero_denominators_give_no_value_not_zero(rep):
    make_deal(rep, at=days_ago(1))
    recompute.recompute_all_dirty()
    from kpis import reading

    values = reading.kpi_values("month", Period.containing("month", local_date(days_ago(1))))
    assert values["win_rate_pct"]["value"] is None
    assert values["days_to_close"]["value"] is None
    assert values["offer_acceptance_pct"]["value"] is None
    assert values["leads"]["value"] == 1


@pytest.fixture
def celery_on_redis(redis_server):
    """The project's Celery app, pointed at the real redis-server, with a worker running
    the real tasks in this process (so it shares the test database)."""
    previous = app.conf.broker_url, app.conf.broker_transport_options
    app.conf.broker_url = redis_server
    app.conf.broker_transport_options = {"visibility_timeout": 3600}
    _reset_connections()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield app
    app.conf.broker_url, app.conf.broker_transport_options = previous
    _reset_connections()


def _reset_connections():
    # Forget (without closing: kombu's registry would hand the closed pool back) the
    # connection pools made for the previous broker.
    app._pool = None
    app.amqp._producer_pool = None


# On PostgreSQL: the worker thread and the test share one real database (SQLite's
# shared in-memory test database locks whole tables between threads).
@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_committed_transition_reaches_the_snapshots_through_a_worker_on_redis(
    on_postgres, celery_on_redis, rep
):
    with transaction.atomic():
        deal = make_deal(rep, at=days_ago(2))
    day = local_date(days_ago(2))
    deadline = time.monotonic() + 60
    while stored("leads", day=day) != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stored("leads", day=day) == 1
    with transaction.atomic():
        domain.move_forward(deal, Stage.NEEDS, by=rep, at=days_ago(1))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        stored("qualified_leads", day=local_date(days_ago(1))) != 1 or DirtyDay.objects.exists()
    ):
        time.sleep(0.2)
    assert stored("qualified_leads", day=local_date(days_ago(1))) == 1
    assert DirtyDay.objects.count() == 0


def test_a_full_recompute_clears_the_marks_it_covers(rep):
    make_deal(rep, at=days_ago(3))
    assert DirtyDay.objects.exists()
    recompute.recompute_all()
    assert DirtyDay.objects.count() == 0
    assert stored("leads", day=local_date(days_ago(3))) == 1


def test_one_transaction_enqueues_one_recompute_however_many_changes_it_marks(
    rep, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        for _ in range(5):
            make_deal(rep, at=days_ago(3))
    assert [c.__name__ for c in callbacks] == ["_enqueue"]


def test_every_scheduled_job_names_a_registered_task():
    from django.conf import settings

    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled == {
        "kpis.recompute_dirty",
        "kpis.mark_today",
        "kpis.recompute_all",
        "kpis.freeze_forecasts",
    }
    assert scheduled <= set(app.tasks)


def test_the_hourly_job_marks_today_for_the_now_kpis(db):
    from kpis.tasks import mark_today

    mark_today.run()
    assert marked_days() == {today()}


def _all_rows():
    return sorted(
        KpiSnapshot.objects.values_list(
            "kpi", "grain", "period_start", "slice", "breakdown", "value", "numerator"
        )
    )


def test_a_full_recompute_in_parts_writes_what_the_serial_one_writes(rep, teammate):
    deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=400)
    deal_in_stage(teammate, Stage.OFFER, start_days_ago=30)
    recompute.recompute_all()
    serial = _all_rows()
    make_deal(rep, at=days_ago(5))  # a mark the job must cover
    KpiSnapshot.objects.all().delete()

    job, parts = recompute.start_full_recompute()
    # The day parts first; the part that finishes them hands out the larger ones.
    assert {grain for _, (grain, _, _) in parts} == {"day"}
    queue, grains = list(reversed(parts)), set()  # any order within a phase
    while queue:
        assert DirtyDay.objects.exists()  # cleared only by the last part
        index, part = queue.pop(0)
        grains.add(part[0])
        queue += reversed(recompute.recompute_part(job.pk, index, *part))
    assert grains == {"day", "week", "month", "quarter", "year"}
    assert job.parts > 5
    index, part = parts[0]
    assert recompute.recompute_part(job.pk, index, *part) == []  # a redelivery is harmless

    job.refresh_from_db()
    assert job.finished_at is not None
    assert sorted(job.done) == list(range(job.parts))
    assert DirtyDay.objects.count() == 0
    # Its hour's pipeline KPIs are done (unless the job ran across an hour's end).
    assert company.hour_pending(job.created_at) is (
        hour_of(job.created_at) != hour_of(job.finished_at)
    )
    fanned = _all_rows()
    KpiSnapshot.objects.all().delete()
    recompute.recompute_all()
    assert fanned == _all_rows()
    assert len(serial) < len(fanned)  # the new lead added rows


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_nightly_full_recompute_fans_out_through_a_worker_on_redis(
    on_postgres, celery_on_redis, rep
):
    from kpis.models import RecomputeJob
    from kpis.tasks import recompute_all

    deal_in_stage(rep, Stage.OFFER, start_days_ago=100)
    DirtyDay.objects.all().delete()  # the worker would sweep them
    recompute_all.delay()
    deadline = time.monotonic() + 90
    while (
        time.monotonic() < deadline
        and not RecomputeJob.objects.filter(finished_at__isnull=False).exists()
    ):
        time.sleep(0.2)
    job = RecomputeJob.objects.get()
    assert job.finished_at is not None
    assert sorted(job.done) == list(range(job.parts))
    fanned = _all_rows()
    recompute.recompute_all()
    assert fanned == _all_rows()


@pytest.fixture
def broker_down():
    """The project's Celery app pointed at a loopback port where nothing listens."""
    from scripts.servers import free_port

    previous = app.conf.broker_url, app.conf.broker_transport_options
    app.conf.broker_url = f"redis://127.0.0.1:{free_port()}/0"
    app.conf.broker_transport_options = {"socket_connect_timeout": 2}
    _reset_connections()
    yield
    app.conf.broker_url, app.conf.broker_transport_options = previous
    _reset_connections()


def test_commits_never_wait_on_or_fail_with_a_broker_that_is_down(
    rep, broker_down, caplog, django_capture_on_commit_callbacks
):
    deals = []
    for n in range(5):
        with django_capture_on_commit_callbacks(execute=True):
            deals.append(make_deal(rep, at=days_ago(10 + n)))
    for deal in deals:
        with django_capture_on_commit_callbacks(execute=True):
            domain.move_forward(deal, Stage.QUALIFICATION, by=rep, at=days_ago(3))
    dirty._sender.flush(timeout=30)
    assert marked_days() >= {local_date(days_ago(d)) for d in (3, 10, 11, 12, 13, 14)}
    assert "could not enqueue the dirty recompute" in caplog.text
    # Nothing was lost: the sweep recomputes the marks.
    recompute.recompute_all_dirty()
    assert stored("leads", grain="month", day=local_date(days_ago(3))) is not None
    assert DirtyDay.objects.count() == 0


def test_the_incremental_recompute_ends_where_a_full_one_does(rep, teammate, manager):
    from kpis.models import Target
    from kpis.periods import Grain

    old = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=200)
    deal_in_stage(teammate, Stage.OFFER, start_days_ago=90)
    lost = deal_in_stage(rep, Stage.NEEDS, start_days_ago=120)
    domain.mark_lost(lost, lost_reason("price"), by=rep, at=days_ago(100))
    Target.objects.create(
        grain=Grain.MONTH,
        period_start=Period.containing("month", today()).start,
        rep=rep,
        amount=Decimal("50000"),
    )
    recompute.recompute_all()
    # Changes now and back-dated: a win (stage probabilities and the open pipeline of
    # every period move), a new opportunity, a reopened loss, an expected close date.
    domain.agree_terms(old, by=rep, agreed_value=Decimal("9000"), discount_pct=Decimal("10"))
    fresh = make_deal(rep, at=days_ago(8))
    domain.move_forward(fresh, Stage.NEEDS, by=rep, at=days_ago(6))
    domain.reopen(lost, by=manager, at=days_ago(2))
    domain.update_deal(fresh, by=rep, expected_close_date=today() + datetime.timedelta(days=45))
    # The first recompute of the next hour: it takes the trailing statistics again.
    company.forget_inputs()
    recompute.recompute_all_dirty()
    incremental = snapshot_rows()
    recompute.recompute_all()
    assert incremental == snapshot_rows()


def test_the_trailing_statistics_are_taken_once_an_hour(rep):
    from django.utils import timezone

    from kpis.models import HourlyInputs

    later = today() + datetime.timedelta(days=200)
    waiting = deal_in_stage(rep, Stage.OFFER, start_days_ago=20)
    domain.update_deal(waiting, by=rep, expected_close_date=later)
    recompute.recompute_all()
    taken = HourlyInputs.objects.get()
    assert taken.hour == hour_of(timezone.now())
    assert taken.pipeline_refreshed is True

    def coverage_needed():
        return KpiSnapshot.objects.get(
            kpi="pipeline_coverage",
            grain="month",
            period_start=Period.containing("month", later).start,
            slice="company",
            breakdown="",
        ).extra["coverage_needed"]

    assert coverage_needed() is None  # nothing won or lost in the trailing year
    won_deal(rep, start_days_ago=30)
    recompute.recompute_all_dirty()
    # Within the hour a transition's recompute reads the stored statistics: the won
    # deal's periods are recomputed, the month of another deal's close keeps its row.
    assert HourlyInputs.objects.get().data == taken.data
    assert coverage_needed() is None
    # The next hour: its first recompute (the hourly job marks today) takes them again
    # and refreshes the pipeline KPIs of every period with them.
    HourlyInputs.objects.update(hour=taken.hour - datetime.timedelta(hours=1))
    recompute.mark_today()
    recompute.recompute_all_dirty()
    fresh = HourlyInputs.objects.get(hour=taken.hour)
    assert fresh.data["trailing"] == [[rep.pk, 1, 0]]
    assert fresh.pipeline_refreshed is True
    assert coverage_needed() == 1.0


def test_a_new_hour_takes_its_inputs_after_the_dirty_days_are_stored(rep, monkeypatch):
    """The first change of an hour: its snapshots are written with the latest stored
    inputs (the hour before's) first; then the sweep takes the hour's, refreshes every
    period's pipeline KPIs and recomputes today with them. It ends where a full
    recompute does."""
    from django.utils import timezone

    from kpis.models import HourlyInputs

    lost = deal_in_stage(rep, Stage.OFFER, start_days_ago=50)
    domain.mark_lost(lost, lost_reason("price"), by=rep, at=days_ago(10))
    deal_in_stage(rep, Stage.NEEDS, start_days_ago=30)
    recompute.recompute_all()
    hour = hour_of(timezone.now())
    HourlyInputs.objects.update(hour=hour - datetime.timedelta(hours=1))
    make_deal(rep, at=timezone.now())
    leads_when_taken = []
    original = company.take_inputs

    def spy(now):
        leads_when_taken.append(stored("leads", grain="day"))
        return original(now)

    monkeypatch.setattr(company, "take_inputs", spy)
    recomputed = []
    original_days = recompute.recompute_days

    def days_spy(days, claimed=None):
        recomputed.append(sorted(days))
        return original_days(days, claimed)

    monkeypatch.setattr(recompute, "recompute_days", days_spy)
    recompute.recompute_all_dirty()
    # Today's new lead was stored before the hour's inputs were taken, once; having
    # taken them, the sweep recomputed today again (its stalled deals).
    assert leads_when_taken == [1]
    assert recomputed == [[today()], [today()]]
    assert sorted(HourlyInputs.objects.values_list("hour", "pipeline_refreshed")) == [
        (hour - datetime.timedelta(hours=1), True),
        (hour, True),
    ]
    assert HourlyInputs.objects.get(hour=hour).data["trailing"] == [[rep.pk, 0, 1]]
    assert not DirtyDay.objects.exists()
    incremental = snapshot_rows()
    recompute.recompute_all()
    assert incremental == snapshot_rows()


def test_the_data_span_reaches_back_to_the_earliest_expected_close_date(rep):
    """An open opportunity expected to close before any other moment of the data (an
    overdue date entered by hand) is in the ledger's ``pipeline`` family on that day:
    a full recompute builds the day, and its periods weigh the deal's value."""
    deal = deal_in_stage(rep, Stage.OFFER, start_days_ago=10)
    early = local_date(days_ago(40))
    domain.update_deal(deal, by=rep, expected_close_date=early)
    assert recompute.data_span()[0] == early
    recompute.recompute_all()
    coverage = KpiSnapshot.objects.get(
        kpi="pipeline_coverage", grain="day", period_start=early, slice=f"rep:{rep.pk}"
    )
    assert coverage.numerator == deal.current_value_base == Decimal("10000")


def test_within_an_hour_the_incremental_open_pipeline_equals_a_full_ones(
    rep, teammate, monkeypatch
):
    """Within an hour (its statistics stored, every period's pipeline refreshed), an
    incremental recompute weighs the open pipeline of the dirty days' periods of every
    grain from the ledger's ``pipeline`` family, reading no open deal; the hour's
    refresh reads them from the deals. Both store what a full recompute stores."""
    offer = deal_in_stage(teammate, Stage.OFFER, start_days_ago=90)
    needs = deal_in_stage(rep, Stage.NEEDS, start_days_ago=40)
    # The data span reaches 60 days ahead already: the dates set below fall inside it
    # (days a change adds to the span get their pipeline rows at the hour's refresh).
    later = deal_in_stage(rep, Stage.OFFER, start_days_ago=20)
    domain.update_deal(later, by=rep, expected_close_date=today() + datetime.timedelta(days=60))
    recompute.recompute_all()
    soon = today() + datetime.timedelta(days=3)
    domain.update_deal(offer, by=teammate, expected_close_date=soon)
    domain.update_deal(needs, by=rep, expected_close_date=today() + datetime.timedelta(days=45))
    queries = []
    original = company._open_pipeline

    def spy(*args, **kwargs):
        queries.append(args[2:] + tuple(kwargs.values()))
        return original(*args, **kwargs)

    monkeypatch.setattr(company, "_open_pipeline", spy)
    recompute.recompute_all_dirty()
    assert queries == []  # from the ledger
    incremental = snapshot_rows()
    weighted = KpiSnapshot.objects.get(
        kpi="weighted_pipeline",
        grain="month",
        period_start=Period.containing("month", soon).start,
        slice=f"rep:{teammate.pk}",
    )
    assert weighted.numerator > 0
    recompute.recompute_all()
    assert incremental == snapshot_rows()
    # The hour's refresh weighs the open deals themselves: the same digits.
    recompute.refresh_hour()
    assert queries == [("day",), ("week",), ("month",), ("quarter",), ("year",)]
    assert incremental == snapshot_rows()


def test_a_churn_date_set_moved_or_cleared_marks_the_days_from_the_earlier_date(rep):
    from tests.factories import CompanyFactory

    customer = CompanyFactory()
    DirtyDay.objects.all().delete()
    customer.name = "Renamed"
    customer.save()
    assert marked_days() == set()
    customer.churned_at = local_date(days_ago(3))
    customer.save()
    assert marked_days() == {local_date(days_ago(d)) for d in range(4)}
    DirtyDay.objects.all().delete()
    customer.churned_at = local_date(days_ago(6))
    customer.save()
    assert marked_days() == {local_date(days_ago(d)) for d in range(7)}
    DirtyDay.objects.all().delete()
    customer.churned_at = None
    customer.save()
    assert marked_days() == {local_date(days_ago(d)) for d in range(7)}


def test_a_rep_moving_team_marks_the_days_of_their_deals_and_the_team_rows_follow(
    rep, outsider, team_a, team_b, django_assert_num_queries
):
    deal = make_deal(rep, at=days_ago(12))
    domain.move_forward(deal, Stage.QUALIFICATION, by=rep, at=days_ago(9))
    make_deal(outsider, at=days_ago(20))
    recompute.recompute_all()
    DirtyDay.objects.all().delete()
    rep.first_name = "Renamed"
    rep.save()
    assert marked_days() == set()
    with django_assert_num_queries(1):  # a login saves last_login alone: no lookup
        rep.save(update_fields=["last_login"])
    assert marked_days() == set()
    assert stored("leads", grain="day", day=days_ago(12), slice_key=f"team:{team_a.pk}") == 1
    rep.team = team_b
    rep.save()
    # Every day from the rep's first deal: a team slice is its members' deals.
    assert marked_days() == {local_date(days_ago(d)) for d in range(13)}
    recompute.recompute_all_dirty()
    lead_day = local_date(days_ago(12))
    assert stored("leads", grain="day", day=lead_day, slice_key=f"team:{team_b.pk}") == 1
    assert stored("leads", grain="day", day=lead_day, slice_key=f"team:{team_a.pk}") is None
    incremental = snapshot_rows()
    recompute.recompute_all()
    assert incremental == snapshot_rows()


def test_deleting_a_team_marks_the_days_of_its_members_deals(rep, teammate, team_a):
    make_deal(rep, at=days_ago(5))
    make_deal(teammate, at=days_ago(8))
    recompute.recompute_all()
    team = team_a.pk
    assert stored("leads", grain="month", day=local_date(days_ago(8)), slice_key=f"team:{team}")
    DirtyDay.objects.all().delete()
    team_a.delete()
    assert marked_days() == {local_date(days_ago(d)) for d in range(9)}
    recompute.recompute_all_dirty()
    for d in (5, 8):
        day = local_date(days_ago(d))
        assert stored("leads", grain="day", day=day, slice_key=f"team:{team}") is None
    incremental = snapshot_rows()
    recompute.recompute_all()
    assert incremental == snapshot_rows()
