"""The measure ledger (kpis/ledger.py): every larger period's sums are exactly the sums
of its days, kept so by adding each recomputed day's change, and equal to a ledger
built from scratch after any sequence of changes and incremental recomputes."""

import datetime
from collections import defaultdict
from decimal import Decimal

import pytest
from django.utils import timezone

from funnel import domain
from funnel.stages import Stage
from kpis import compute, dirty, ledger, recompute
from kpis.models import DirtyDay, KpiSnapshot, LedgerState, PendingChange, PeriodMeasures
from kpis.periods import GRAINS, Grain, Period, local_date, start_of, today
from tests.factories import days_ago, deal_in_stage, lost_reason, make_deal, won_deal
from tests.kpis.builders import ledger_rows, snapshot_rows


def test_exact_values_survive_the_json_round_trip():
    for value in (
        7,
        -3,
        Decimal("12345678901234.57"),
        Decimal("-0.01"),
        datetime.timedelta(days=3, seconds=7, microseconds=1),
        -datetime.timedelta(microseconds=1),
    ):
        assert ledger.decode(ledger.encode(value)) == value
        assert type(ledger.decode(ledger.encode(value))) is type(value)


def test_zero_sums_and_empty_families_are_pruned():
    assert ledger.pruned(
        {"a": {"n": 0, "days": datetime.timedelta(0)}, "b": {"n": 2, "value": Decimal("0.00")}}
    ) == {"b": {"n": 2}}


def _summed_days(rows):
    """Each larger period's sums rebuilt from the stored day rows."""
    out = defaultdict(dict)
    for (grain, day, slice_, breakdown), (sums, _) in rows.items():
        if grain != Grain.DAY:
            continue
        for larger in ledger.LARGER:
            key = (larger.value, start_of(larger, day), slice_, breakdown)
            out[key] = ledger._plus(out[key], sums)
    return {key: sums for key, sums in out.items() if sums}


def _rebuild():
    """Drop the ledger and build it, with every snapshot, from nothing."""
    PeriodMeasures.objects.all().delete()
    LedgerState.objects.all().delete()
    recompute.recompute_all()


def test_incremental_changes_keep_every_period_equal_to_its_days_and_to_a_fresh_build(
    rep, teammate, manager
):
    old = deal_in_stage(rep, Stage.NEGOTIATION, start_days_ago=200)
    deal_in_stage(teammate, Stage.OFFER, start_days_ago=90)
    lost = deal_in_stage(rep, Stage.NEEDS, start_days_ago=120)
    domain.mark_lost(lost, lost_reason("price"), by=rep, at=days_ago(100))
    recompute.recompute_all()
    assert ledger.is_built()
    # Wins, losses, a reopening, new leads now and back-dated, moves with and without
    # skips: sums go up and down, families appear and vanish, medians move.
    domain.agree_terms(old, by=rep, agreed_value=Decimal("9000"), discount_pct=Decimal("10"))
    fresh = make_deal(rep, at=days_ago(8))
    domain.move_forward(fresh, Stage.OFFER, by=rep, at=days_ago(6))
    recompute.recompute_all_dirty()
    domain.reopen(lost, by=manager, at=days_ago(2))
    other = make_deal(teammate, at=days_ago(40))
    domain.mark_lost(other, lost_reason("price"), by=teammate, at=days_ago(39))
    recompute.recompute_all_dirty()
    assert not DirtyDay.objects.exists()

    incremental = ledger_rows()
    larger = {k: sums for k, (sums, _) in incremental.items() if k[0] != Grain.DAY and sums}
    assert larger == _summed_days(incremental)
    # The same numbers as a ledger and snapshots built from nothing.
    snapshots = snapshot_rows()
    _rebuild()
    assert ledger_rows() == incremental
    assert snapshot_rows() == snapshots
    # The year holds this year's leads: the three set up above, the two added, and
    # the won deal's (start_days_ago=200 may fall in the previous year).
    year = Period.containing(Grain.YEAR, today())
    row = PeriodMeasures.objects.get(
        grain=Grain.YEAR, period_start=year.start, slice="company", breakdown=""
    )
    leads = sum(1 for n in (200, 90, 120, 8, 40) if local_date(days_ago(n)) >= year.start)
    assert row.sums["lead"]["n"] == leads


def test_recomputing_the_same_days_twice_changes_nothing(rep):
    deal_in_stage(rep, Stage.OFFER, start_days_ago=10)
    recompute.recompute_all()
    before = ledger_rows()
    period = Period.containing(Grain.DAY, local_date(days_ago(10)))
    measures = compute.gather(Grain.DAY, period.start_at, period.end_at)
    assert ledger.replace_days([period.start], measures) == {}
    assert ledger_rows() == before


def test_a_recompute_before_any_full_one_builds_the_ledger_first(rep):
    deal_in_stage(rep, Stage.OFFER, start_days_ago=50)
    DirtyDay.objects.all().delete()  # as after an upgrade: snapshots, no ledger, no marks
    assert not ledger.is_built()
    make_deal(rep, at=days_ago(1))
    recompute.recompute_all_dirty()
    assert ledger.is_built()
    # The larger periods count the deal of 50 days ago, whose days were not marked:
    # the build took every day from the deals.
    built = ledger_rows()
    year = Period.containing(Grain.YEAR, today())
    leads = sum(1 for n in (50, 1) if local_date(days_ago(n)) >= year.start)
    assert built[("year", year.start, "company", "")][0]["lead"]["n"] == leads
    _rebuild()
    assert ledger_rows() == built


def test_every_grain_of_a_full_recompute_has_ledger_rows(rep):
    deal_in_stage(rep, Stage.CLOSING, start_days_ago=30)
    recompute.recompute_all()
    grains = set(PeriodMeasures.objects.values_list("grain", flat=True))
    assert grains == {g.value for g in GRAINS}
    # The won-deal medians (days to close...) of the month containing the win.
    month = Period.containing(Grain.MONTH, today())
    medians = PeriodMeasures.objects.filter(
        grain=Grain.MONTH, period_start__lte=month.start, slice="company", breakdown=""
    ).values_list("medians", flat=True)
    assert any(name.startswith("stay_") for m in medians for name in m)


def _marked():
    return set(DirtyDay.objects.values_list("day", flat=True))


def _lead_nobody_marked(rep, days):
    """A lead ``days`` ago whose marks and pending change were lost: the ledger does
    not know it."""
    make_deal(rep, at=days_ago(days))
    DirtyDay.objects.all().delete()
    PendingChange.objects.all().delete()
    return local_date(days_ago(days))


def test_a_lost_mark_is_found_again_by_its_pending_change(rep):
    deal_in_stage(rep, Stage.OFFER, start_days_ago=200)
    recompute.recompute_all()
    deal = make_deal(rep, at=days_ago(20))
    DirtyDay.objects.all().delete()  # the marks are lost, the pending change is not
    dirty.mark_days([days_ago(2)])  # any later change runs the worker
    recompute.recompute_all_dirty()
    assert not PendingChange.objects.filter(deal_id=deal.pk).exists()
    assert _leads(Grain.DAY, local_date(days_ago(20))) == 1
    assert _leads(Grain.WEEK, local_date(days_ago(20))) == 1


def _leads(grain, day):
    period = Period.containing(grain, day)
    snap = KpiSnapshot.objects.filter(
        kpi="leads", grain=grain, period_start=period.start, slice="company", breakdown=""
    ).first()
    return None if snap is None else snap.value


def test_the_days_between_two_dirty_days_are_left_to_the_full_recompute(rep):
    deal_in_stage(rep, Stage.OFFER, start_days_ago=200)
    recompute.recompute_all()
    # A lead the ledger does not know and no mark points to (a lost mark)...
    unmarked = _lead_nobody_marked(rep, 20)
    # ...between two dirty days eight days either side: each dirty day is gathered
    # alone (a busy day costs more than another query per family), so the lead waits
    # for the full recompute, which repairs the day and its larger periods.
    dirty.mark_days([days_ago(28), days_ago(12)])
    recompute.recompute_all_dirty()
    assert _leads(Grain.DAY, unmarked) is None  # no row: no lead that day
    assert _leads(Grain.WEEK, unmarked) is None
    recompute.recompute_all()
    assert _leads(Grain.DAY, unmarked) == 1
    assert _leads(Grain.WEEK, unmarked) == 1


def test_recomputing_one_period_marks_the_days_it_found_changed(rep):
    deal_in_stage(rep, Stage.OFFER, start_days_ago=200)
    recompute.recompute_all()
    day = _lead_nobody_marked(rep, 3)
    recompute.recompute_period(Grain.MONTH, day)
    # The month counts the lead; the day, week, quarter and year follow via the mark.
    assert _leads(Grain.MONTH, day) == 1
    assert _marked() == {day}


def test_a_day_part_run_again_after_the_larger_parts_marks_the_days_it_changed(rep):
    deal_in_stage(rep, Stage.OFFER, start_days_ago=60)
    job, parts = recompute.start_full_recompute()
    queue = list(parts)
    while queue:
        index, part = queue.pop(0)
        queue += recompute.recompute_part(job.pk, index, *part)
    assert not _marked()
    day = _lead_nobody_marked(rep, 3)
    index, part = parts[-1]  # the day part with the latest days, redelivered
    assert recompute.recompute_part(job.pk, index, *part) == []
    assert _marked() == {day}


def test_a_recompute_rewrites_only_the_rows_whose_reading_changed(rep, teammate):
    deal_in_stage(teammate, Stage.OFFER, start_days_ago=5)
    recompute.recompute_all()
    month = Period.containing(Grain.MONTH, today())
    rows = KpiSnapshot.objects.filter(grain=Grain.MONTH, period_start=month.start)
    before = dict(rows.values_list("pk", "computed_at"))
    teammates = set(rows.filter(slice=f"rep:{teammate.pk}").values_list("pk", flat=True))
    company = set(rows.filter(slice="company").values_list("pk", flat=True))
    make_deal(rep)
    recompute.recompute_all_dirty()
    after = dict(rows.values_list("pk", "computed_at"))
    # The teammate's readings did not move: same rows, same times.
    assert {pk: after[pk] for pk in teammates} == {pk: before[pk] for pk in teammates}
    # The company rows carry the recompute's time: the period's "computed at" moves.
    assert all(after[pk] > before[pk] for pk in company)


def test_the_owner_counts_come_from_the_deals_while_another_worker_holds_earlier_days(
    rep, teammate
):
    """An incremental recompute reads the owner counts from the ledger, whose rows for
    an earlier day another worker holds may not be recomputed yet: then it reads them
    from the deals. Here the teammate's only lead (5 days ago) makes them an active rep
    today; the stale ledger would count one active rep, not two."""
    make_deal(rep, at=days_ago(20))
    recompute.recompute_all()
    make_deal(rep, at=timezone.now())
    # Not applied as a difference: gathered again by the worker holding its day.
    lead = make_deal(teammate, at=days_ago(5))
    PendingChange.objects.filter(deal_id=lead.pk).delete()
    held = local_date(days_ago(5))
    DirtyDay.objects.filter(day=held).update(
        claimed_until=timezone.now() + datetime.timedelta(hours=1), whole=True
    )
    recompute.recompute_days([today()])
    row = KpiSnapshot.objects.get(
        kpi="new_leads_per_rep", grain=Grain.DAY, period_start=today(), slice="company"
    )
    assert (row.numerator, row.denominator, row.value) == (1, 2, Decimal("0.5"))
    # The held day's ledger rows are still the old ones: the worker holding it has not
    # recomputed it.
    assert not PeriodMeasures.objects.filter(
        grain=Grain.DAY, period_start=held, slice=f"rep:{teammate.pk}"
    ).exists()


def _year_medians(year, slice_):
    row = PeriodMeasures.objects.filter(
        grain=Grain.YEAR, period_start=year.start, slice=slice_, breakdown=""
    ).first()
    return {} if row is None else row.medians


def _days_in_one_year():
    """How many days ago a nine-day stretch inside one calendar year starts (in early
    January, one in December)."""
    day_of_year = today().timetuple().tm_yday
    return 9 if day_of_year > 10 else day_of_year + 20


@pytest.mark.parametrize(
    "most", [compute.SLICE_MEDIANS_MAX, 0], ids=["filtered per slice", "every slice at once"]
)
def test_a_recompute_takes_again_the_larger_medians_of_the_changed_slices_only(
    rep, teammate, outsider, most, monkeypatch
):
    """The year's median stays of the slices a change touched are taken again; another
    rep's are left as stored (here made wrong on purpose, to show they are not read),
    whether the medians were taken for those slices alone (up to
    ``SLICE_MEDIANS_MAX``) or for every slice (above it)."""
    monkeypatch.setattr(compute, "SLICE_MEDIANS_MAX", most)
    start = _days_in_one_year()
    year = Period.containing(Grain.YEAR, local_date(days_ago(start)))
    deal_in_stage(rep, Stage.NEEDS, start_days_ago=start)
    deal_in_stage(teammate, Stage.NEEDS, start_days_ago=start - 2)
    deal_in_stage(outsider, Stage.NEEDS, start_days_ago=start - 1)
    recompute.recompute_all()
    name = "stay_lead.days"
    row = PeriodMeasures.objects.get(
        grain=Grain.YEAR, period_start=year.start, slice=f"rep:{outsider.pk}", breakdown=""
    )
    row.medians[name] = "99"
    row.save(update_fields=["medians"])
    # The rep's second lead qualifies after three days: the company's median stay in
    # lead of (1, 1, 1, 3) days is 1; the rep's of (1, 3) is 2; the team's is 1.
    deal = make_deal(rep, at=days_ago(start - 5))
    domain.move_forward(deal, Stage.QUALIFICATION, by=rep, at=days_ago(start - 8))
    recompute.recompute_all_dirty()
    assert Decimal(_year_medians(year, "company")[name]) == 1
    assert Decimal(_year_medians(year, f"rep:{rep.pk}")[name]) == 2
    assert Decimal(_year_medians(year, f"team:{rep.team_id}")[name]) == 1
    assert _year_medians(year, f"rep:{outsider.pk}")[name] == "99"
    assert Decimal(_year_medians(year, f"rep:{teammate.pk}")[name]) == 1


@pytest.mark.postgres
def test_the_medians_of_a_few_slices_equal_those_of_every_slice(
    on_postgres, rep, teammate, outsider
):
    """``Family.slice_medians`` (one filtered aggregate per slice) reads what
    ``Family.rolled_up`` (every slice, by grouping sets) reads, period by period."""
    for owner, start in ((rep, 40), (rep, 33), (teammate, 50), (outsider, 20)):
        deal_in_stage(owner, Stage.NEGOTIATION, start_days_ago=start)
    family = compute.FAMILIES["stay_lead"]
    first, end = (
        Period.containing(Grain.MONTH, days_ago(60)),
        Period.containing(Grain.MONTH, today()),
    )
    everything = {
        (bucket, key): medians
        for bucket, key, _, medians in family.rolled_up(Grain.MONTH, first.start_at, end.end_at)
    }
    keys = {"company", f"rep:{rep.pk}", f"team:{outsider.team_id}"}
    few = {
        (bucket, key): medians
        for bucket, key, medians in family.slice_medians(
            Grain.MONTH, first.start_at, end.end_at, keys
        )
        if medians["days"] is not None
    }
    assert few == {k: v for k, v in everything.items() if k[1] in keys}
    assert len(few) >= 4


def test_a_run_of_days_reads_the_day_before_from_the_ledger_unless_it_is_marked(rep, monkeypatch):
    """Growth compares each day with the one before: for the first day of a run, that
    day's measures come from the ledger, or, when it is marked dirty (its ledger rows
    may be stale), from the deals with the run."""
    from tests.kpis.builders import save_deals, won_row

    save_deals(
        [
            won_row(rep, days_ago(40), days_ago(2), Decimal("400")),
            won_row(rep, days_ago(40), days_ago(1), Decimal("500")),
        ]
    )
    recompute.recompute_all()
    starts = []
    original = compute.gather

    def spy(grain, start_at, end_at, *args, **kwargs):
        starts.append(start_at)
        return original(grain, start_at, end_at, *args, **kwargs)

    monkeypatch.setattr(compute, "gather", spy)
    yesterday = Period(Grain.DAY, local_date(days_ago(1)))
    before = yesterday.previous()

    def growth():
        row = KpiSnapshot.objects.get(
            kpi="revenue_growth_pct", grain=Grain.DAY, period_start=yesterday.start, slice="company"
        )
        return row.value, row.numerator, row.denominator

    KpiSnapshot.objects.filter(kpi="revenue_growth_pct", grain=Grain.DAY).delete()
    recompute.recompute_days([yesterday.start])
    assert starts == [yesterday.start_at]
    assert growth() == (Decimal("25"), Decimal("100"), Decimal("400"))
    # The day before marked (another worker holds it): gathered with the run.
    dirty.mark_days([before.start])
    starts.clear()
    KpiSnapshot.objects.filter(kpi="revenue_growth_pct", grain=Grain.DAY).delete()
    recompute.recompute_days([yesterday.start])
    assert starts == [before.start_at]
    assert growth() == (Decimal("25"), Decimal("100"), Decimal("400"))
    # A one-period recompute repairs: it gathers the day before, marked or not.
    DirtyDay.objects.all().delete()
    starts.clear()
    recompute.recompute_period(Grain.DAY, yesterday.start)
    assert starts == [before.start_at]
    assert growth() == (Decimal("25"), Decimal("100"), Decimal("400"))


@pytest.mark.postgres
def test_the_medians_of_every_larger_grain_at_once_equal_those_of_each_grain(
    on_postgres, rep, teammate, outsider
):
    """``Family.medians_by_grains`` (one query, a grouping set per grain and slice type,
    the full recompute's) reads what ``Family.rolled_up`` reads grain by grain."""
    for owner, start in ((rep, 40), (rep, 33), (teammate, 50), (outsider, 20)):
        won_deal(owner, start_days_ago=start)
    start_at = Period.containing(Grain.YEAR, days_ago(60)).start_at
    end_at = Period.containing(Grain.YEAR, today()).end_at
    grains = [Grain.WEEK, Grain.MONTH, Grain.QUARTER, Grain.YEAR]
    for name in sorted(compute.MEDIAN_FAMILIES):
        family = compute.FAMILIES[name]
        at_once = {
            (grain, bucket, key): medians
            for grain, bucket, key, medians in family.medians_by_grains(grains, start_at, end_at)
        }
        by_grain = {
            (grain, bucket, key): medians
            for grain in grains
            for bucket, key, _, medians in family.rolled_up(grain, start_at, end_at)
        }
        assert at_once == by_grain, name
        assert len(at_once) >= 4 * 4, name  # every grain: company, two reps, two teams


@pytest.mark.postgres
def test_the_database_roll_up_equals_the_python_one_breakdowns_included(
    on_postgres, rep, teammate, outsider
):
    """The PostgreSQL gather (grouping sets; a family's breakdowns in one query) reads
    every family, slice and breakdown as the portable one rolled up here does."""
    from tests.factories import ChannelFactory

    web = ChannelFactory(name="Web")
    for owner, start, source in ((rep, 40, "Fair"), (teammate, 30, ""), (outsider, 20, "Web")):
        deal = deal_in_stage(
            owner, Stage.OFFER, start_days_ago=start, channel=web, heard_from=source
        )
        domain.mark_lost(deal, lost_reason("price"), by=owner, at=days_ago(start - 8))
        won_deal(owner, start_days_ago=start + 5, segment="smb", industry="it")
    start_at = Period.containing(Grain.MONTH, days_ago(60)).start_at
    end_at = Period.containing(Grain.MONTH, today()).end_at
    rolled = compute._gather_rolled_up(Grain.MONTH, start_at, end_at).prune()
    portable = compute._gather_python(Grain.MONTH, start_at, end_at).prune()
    assert {k: dict(v) for k, v in rolled.sums.items()} == {
        k: dict(v) for k, v in portable.sums.items()
    }
    breakdowns = {key[2].split(":", 1)[0] for key in rolled.sums if key[2]}
    assert breakdowns == {"source", "reason", "stage", "segment", "industry"}
    assert any(key[1].startswith("team:") and key[2] for key in rolled.sums)
