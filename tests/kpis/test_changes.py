"""A deal's change applied as the difference of its contributions (kpis/changes.py):
what a change keeps, what the worker applies, and a gather that meets changes
committed while it reads."""

from decimal import Decimal

import pytest

from funnel import domain
from funnel.models import Deal
from funnel.stages import Stage
from kpis import changes, compute, dirty, recompute
from kpis.models import DirtyDay, KpiSnapshot, PendingChange, PeriodMeasures
from kpis.periods import Grain, Period, local_date
from tests.factories import CompanyFactory, days_ago, deal_in_stage, make_deal, won_deal
from tests.kpis.builders import ledger_rows, snapshot_rows
from tests.threads import Interleaving, in_thread, run_together


def _before(deal):
    return changes.decode(PendingChange.objects.get(deal_id=deal.pk).before)


def _contribution(deal):
    return {k: f for k, f in compute.contributions([deal.pk]).sums.items() if f}


def test_a_change_keeps_what_the_ledger_holds_and_a_second_change_keeps_the_first(rep):
    deal = make_deal(rep, at=days_ago(10))
    assert _before(deal) == {}  # a new deal: the ledger holds nothing of it
    recompute.recompute_all()
    assert _before(deal) == _contribution(deal)  # the full recompute read it
    recompute.recompute_all_dirty()
    assert not PendingChange.objects.exists()
    held = _contribution(deal)
    domain.move_forward(deal, Stage.QUALIFICATION, by=rep, at=days_ago(8))
    assert _before(deal) == held
    domain.move_forward(deal, Stage.NEEDS, by=rep, at=days_ago(6))
    assert _before(deal) == held  # the oldest is the one the ledger holds
    # A change with its before kept marks its days for its own slices only.
    assert set(DirtyDay.objects.values_list("whole", flat=True)) == {False}


def test_a_write_that_keeps_no_before_gathers_its_days_again(rep):
    with dirty.batched():  # an import
        deal = make_deal(rep, at=days_ago(4))
    assert not PendingChange.objects.filter(deal_id=deal.pk).exists()
    assert DirtyDay.objects.get(day=local_date(days_ago(4))).whole


def test_a_change_whose_before_was_not_kept_gathers_its_days_again(rep):
    deal = make_deal(rep, at=days_ago(4))
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    # A write outside the domain functions, which keep the before: nothing is pending.
    Deal.objects.filter(pk=deal.pk).update(title="Renamed")
    dirty.mark_deal(deal)
    assert not PendingChange.objects.exists()
    assert DirtyDay.objects.get(day=local_date(days_ago(4))).whole
    assert set(DirtyDay.objects.values_list("whole", flat=True)) == {True}


def test_applying_moves_the_ledger_to_a_fresh_builds_and_marks_the_days_it_moved(rep, teammate):
    deal = deal_in_stage(rep, Stage.OFFER, start_days_ago=40)
    deal_in_stage(teammate, Stage.NEEDS, start_days_ago=30)
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    DirtyDay.objects.all().delete()
    domain.start_offer(deal, value=Decimal("1200"), by=rep, at=days_ago(20))
    domain.update_deal(deal, by=rep, owner=teammate)  # every slice of the rep's moves
    scope = changes.apply_pending()
    assert not PendingChange.objects.exists()
    applied = ledger_rows()
    # The days whose rows moved are marked with the families and slices that did.
    marked = {d.day: d.scope for d in DirtyDay.objects.exclude(scope={})}
    assert marked == {day: {f: sorted(s) for f, s in fam.items()} for day, fam in scope.items()}
    entered = local_date(deal.entered_lead_at)
    assert {f"rep:{rep.pk}", f"rep:{teammate.pk}"} <= scope[entered]["lead"]
    # Its sums are a fresh build's; the medians follow in the sweep, and then all is.
    recompute.recompute_all_dirty()
    swept = ledger_rows()
    PeriodMeasures.objects.all().delete()
    recompute.build_ledger()
    fresh = ledger_rows()
    assert _sums(applied) == _sums(fresh)
    assert swept == fresh


def _sums(rows):
    """The sums of every row (a row whose deal left keeps its medians until the sweep)."""
    return {key: sums for key, (sums, _) in rows.items() if sums}


def test_a_change_applied_twice_adds_nothing_the_second_time(rep):
    deal = make_deal(rep, at=days_ago(5))
    recompute.recompute_all()
    changes.apply_pending()
    domain.move_forward(deal, Stage.QUALIFICATION, by=rep, at=days_ago(3))
    changes.apply_pending()
    once = ledger_rows()
    assert changes.apply_pending() == {}
    assert ledger_rows() == once


def test_the_day_snapshots_of_applied_changes_are_those_of_a_full_recompute(rep, teammate):
    deal = deal_in_stage(rep, Stage.NEEDS, start_days_ago=12)
    deal_in_stage(teammate, Stage.QUALIFICATION, start_days_ago=12)
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    domain.move_forward(deal, Stage.OFFER, by=rep, at=days_ago(2))
    recompute.recompute_all_dirty()
    assert not dirty.pending() and not PendingChange.objects.exists()
    incremental = snapshot_rows()
    recompute.recompute_all()
    assert snapshot_rows() == incremental


def test_a_won_deal_moved_to_another_company_moves_the_customer_kpis(rep):
    """The customer KPIs read a won deal's company, which is no measure: its change
    moves no sum, yet the repeat and new customers move (company.CUSTOMER_KPIS)."""
    first = won_deal(rep)
    second = won_deal(rep, company=first.company)
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    month = Period.containing(Grain.MONTH, local_date(second.won_at)).start

    def company_kpi(code):
        row = KpiSnapshot.objects.get(
            kpi=code, grain=Grain.MONTH, period_start=month, slice="company"
        )
        return row.value, row.numerator, row.denominator

    assert company_kpi("repeat_customer_pct") == (100, 1, 1)
    domain.update_deal(second, by=rep, company=CompanyFactory(), contact=None)
    recompute.recompute_all_dirty()
    assert not dirty.pending() and not PendingChange.objects.exists()
    assert company_kpi("repeat_customer_pct") == (0, 0, 2)
    incremental = snapshot_rows()
    recompute.recompute_all()
    assert snapshot_rows() == incremental


# --- a gather meeting changes committed while it reads (PostgreSQL) ---------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_changes_committed_while_a_gather_reads_are_applied_once(
    on_postgres, rep, teammate, monkeypatch
):
    """A full recompute's snapshot sees one change of ``pending`` (its before is set to
    what the snapshot read) and not a second one, nor the first change of ``fresh``,
    both committed after the snapshot was taken and before the day rows are replaced."""
    pending = deal_in_stage(rep, Stage.NEEDS, start_days_ago=20)
    fresh = deal_in_stage(teammate, Stage.QUALIFICATION, start_days_ago=20)
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    domain.move_forward(pending, Stage.OFFER, by=rep, at=days_ago(10))
    original = changes._seen
    done = []

    def change_then_seen():
        # Inside the snapshot, the gather has read every day; the pending changes it
        # saw are read next.
        if not done:
            done.append(True)
            in_thread(
                lambda: (
                    domain.start_offer(
                        Deal.objects.get(pk=pending.pk),
                        value=Decimal("900"),
                        by=rep,
                        at=days_ago(9),
                    ),
                    domain.move_forward(
                        Deal.objects.get(pk=fresh.pk), Stage.NEEDS, by=teammate, at=days_ago(5)
                    ),
                )
            )
        return original()

    monkeypatch.setattr(changes, "_seen", change_then_seen)
    recompute.recompute_all()
    monkeypatch.setattr(changes, "_seen", original)
    assert done
    recompute.recompute_all_dirty()
    assert not dirty.pending() and not PendingChange.objects.exists()
    incremental, measures = snapshot_rows(), ledger_rows()
    recompute.recompute_all()
    assert (snapshot_rows(), ledger_rows()) == (incremental, measures)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_no_change_is_applied_between_a_gathers_snapshot_and_its_replacement(
    on_postgres, rep, monkeypatch
):
    deal = make_deal(rep, at=days_ago(6))
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    domain.move_forward(deal, Stage.QUALIFICATION, by=rep, at=days_ago(4))
    steps = Interleaving()
    monkeypatch.setattr(changes, "_seen", steps.held(changes._seen, "gather read"))
    monkeypatch.setattr(changes, "_replace", steps.noted(changes._replace, "gather replaced"))

    def gather():
        compute.store_days([Period(Grain.DAY, local_date(days_ago(4)))])

    run_together(gather, steps.then(changes.apply_pending, "applied"))
    assert steps.order == ["gather read", "gather replaced", "applied"]
    assert not PendingChange.objects.exists()
