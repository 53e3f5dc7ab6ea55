"""The open deals now kept by difference (kpis.opennow): a change moves them by its
deal's difference, a recompute of every slice of today counts them from the deals,
and the stalled deals are those as of that count."""

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import User
from funnel import domain
from funnel.models import Deal
from funnel.stages import Stage
from kpis import changes, company, dirty, opennow, recompute
from kpis.models import KpiSnapshot, OpenNow, PendingChange, StageSetting
from kpis.periods import Grain, Period, today
from tests.factories import days_ago, deal_in_stage, lost_reason, make_deal
from tests.kpis.builders import snapshot_rows
from tests.threads import Interleaving, in_thread, run_together


def _table():
    every = OpenNow.objects.values_list("slice", flat=True)
    return opennow.read(every)


def _count(as_of, limits):
    """Count the table from the deals at ``as_of`` with ``limits``, as a recompute of
    every slice of today does."""
    teams = dict(User.objects.values_list("id", "team_id"))
    changes.count_open(lambda: company.open_now(as_of, limits, teams), as_of, limits)


def _fresh(as_of=None, limits=None):
    """The open deals now counted from the deals, as the table should hold them."""
    counted_at, counted_limits = opennow.as_counted()
    teams = dict(User.objects.values_list("id", "team_id"))
    fresh = company.open_now(as_of or counted_at, limits or counted_limits, teams)
    return {
        slice_: {stage: tuple(values) for stage, values in by_stage.items()}
        for slice_, by_stage in fresh.items()
    }


def _now_row(code, slice_key="company"):
    month = Period.containing(Grain.MONTH, today())
    row = KpiSnapshot.objects.filter(
        kpi=code, grain=Grain.MONTH, period_start=month.start, slice=slice_key, breakdown=""
    ).first()
    return None if row is None else row.value


def test_a_change_moves_the_open_deals_now_without_counting_them_again(rep, outsider, monkeypatch):
    deal = deal_in_stage(rep, Stage.QUALIFICATION, start_days_ago=10)
    make_deal(outsider, at=days_ago(3), estimated_value=Decimal("700"))
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    assert OpenNow.objects.filter(slice="company").exists()
    assert _table() == _fresh()
    counts = []
    original = company.open_now
    monkeypatch.setattr(company, "open_now", lambda *a: counts.append(1) or original(*a))
    domain.move_forward(deal, Stage.NEEDS, by=rep)
    recompute.recompute_all_dirty()
    assert counts == []  # the change's difference only
    monkeypatch.setattr(company, "open_now", original)
    table = _table()
    assert table == _fresh()
    assert (table["company"]["needs"][0], table["company"].get("qualification")) == (1, None)
    assert (_now_row("open_deals_needs"), _now_row("open_deals_qualification")) == (1, None)
    assert _now_row("open_deals_lead", f"rep:{outsider.pk}") == 1
    # Lost: out of every slice's open deals; the outsider's slices untouched.
    KpiSnapshot.objects.filter(kpi="open_deals_lead", slice=f"rep:{outsider.pk}").update(
        value=Decimal(99)
    )
    domain.mark_lost(deal, lost_reason("price"), by=rep)
    assert changes.apply_pending()[today()][dirty.DEALS] == {
        "company",
        f"team:{rep.team_id}",
        f"rep:{rep.pk}",
    }
    recompute.recompute_all_dirty()
    assert _table() == _fresh()
    assert (_now_row("open_deals_needs"), _now_row("open_deals_needs", f"rep:{rep.pk}")) == (
        None,
        None,
    )
    assert _now_row("open_deals_lead", f"rep:{outsider.pk}") == 99
    dirty.mark_days([today()])
    recompute.recompute_all_dirty()
    incremental = snapshot_rows()
    recompute.recompute_all()
    assert snapshot_rows() == incremental


def test_stalled_deals_are_counted_as_of_the_last_count_from_the_deals(rep):
    """Stage limit 5 days. Counted 2 days ago, a deal whose stage changed 6 days ago was
    not stalled yet; changes applied since keep that count (a note takes a stalled deal
    out at once); the next count from the deals (the hour's refresh marks today for
    every slice) takes it in."""
    StageSetting.objects.filter(stage__in=[Stage.NEEDS, Stage.OFFER]).update(stall_limit_days=5)
    aging = deal_in_stage(rep, Stage.NEEDS, start_days_ago=8)
    stalled = deal_in_stage(rep, Stage.OFFER, start_days_ago=30)
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    assert _now_row("stalled_deals") == 2
    limits = opennow.as_counted()[1]
    two_days_ago = timezone.now() - datetime.timedelta(days=2)
    _count(two_days_ago, limits)
    assert _table()["company"]["needs"][::2] == (1, 0)
    assert _table()["company"]["offer"][::2] == (1, 1)
    # A call held with the stalled deal: out of the stalled deals at once. Another
    # change applied: the aging deal stays out until the next count.
    domain.log_activity(stalled, kind="call", held_at=timezone.now(), by=rep)
    domain.update_deal(aging, by=rep, estimated_value=Decimal("1200"))
    recompute.recompute_all_dirty()
    assert _table() == _fresh(two_days_ago)
    assert (_now_row("stalled_deals"), _table()["company"]["needs"]) == (
        None,
        (1, Decimal("1200"), 0),
    )
    assert _fresh(timezone.now())["company"]["needs"] == (1, Decimal("1200"), 1)
    # The hour's refresh marks today for every slice: counted from the deals now.
    dirty.mark_days([today()])
    recompute.recompute_all_dirty()
    assert _table() == _fresh()
    assert _now_row("stalled_deals") == 1


@pytest.mark.parametrize("count_between", [False, True])
def test_a_count_between_a_change_and_its_apply_sets_the_changes_before(rep, count_between):
    """Counted from the deals while a change is pending, the table holds the deal's new
    state already: the pending row's state becomes what the count read, so applying it
    adds nothing again."""
    deal = deal_in_stage(rep, Stage.QUALIFICATION, start_days_ago=10)
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    domain.move_forward(deal, Stage.NEEDS, by=rep)
    kept = PendingChange.objects.get(deal_id=deal.pk).before_open
    assert kept[0] == Stage.QUALIFICATION
    if count_between:
        _count(*opennow.as_counted())
        assert PendingChange.objects.get(deal_id=deal.pk).before_open[0] == Stage.NEEDS
    changes.apply_pending()
    assert _table() == _fresh()
    assert _table()["company"]["needs"][0] == 1


def test_a_pending_change_that_kept_no_state_makes_the_next_recompute_count_again(rep):
    deal = deal_in_stage(rep, Stage.QUALIFICATION, start_days_ago=10)
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    domain.move_forward(deal, Stage.NEEDS, by=rep)
    PendingChange.objects.update(before_open=None)  # kept by an older release
    changes.apply_pending()
    assert opennow.as_counted() is None
    recompute.recompute_all_dirty()
    assert opennow.as_counted() is not None
    assert _table() == _fresh()


def test_new_stall_limits_make_a_batch_count_again(rep):
    """Counted with one set of stall limits, the table is not read with another: the
    next hour's inputs (here, an admin's limit) make the batch count from the deals."""
    deal_in_stage(rep, Stage.NEEDS, start_days_ago=12)
    other = make_deal(rep, at=timezone.now())
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    assert opennow.as_counted()[1][Stage.NEEDS] is None  # no stays measured: no limit
    assert _now_row("stalled_deals") is None
    StageSetting.objects.filter(stage=Stage.NEEDS).update(stall_limit_days=5)
    company.forget_inputs()  # the next hour's inputs
    domain.update_deal(other, by=rep, estimated_value=Decimal("800"))
    recompute.recompute_dirty()
    assert opennow.as_counted()[1][Stage.NEEDS] == 5
    assert _table() == _fresh()
    assert _table()["company"]["needs"] == (1, Decimal("10000"), 1)
    assert _now_row("stalled_deals") == 1


# --- a count meeting changes committed while it reads (PostgreSQL) ----------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_changes_committed_while_a_count_reads_are_applied_once(
    on_postgres, rep, teammate, monkeypatch
):
    """The count's snapshot sees the first change of ``pending`` (its state becomes what
    the snapshot read), not its second one nor the first change of ``fresh``, both
    committed after the snapshot was taken and before the table is replaced."""
    pending = deal_in_stage(rep, Stage.QUALIFICATION, start_days_ago=20)
    fresh = make_deal(teammate, at=days_ago(5), estimated_value=Decimal("300"))
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    domain.move_forward(pending, Stage.NEEDS, by=rep)
    original = opennow.pending_states
    done = []

    def change_then_states():
        if not done:
            done.append(True)
            in_thread(
                lambda: (
                    domain.update_deal(
                        Deal.objects.get(pk=pending.pk), by=rep, estimated_value=Decimal("4000")
                    ),
                    domain.move_forward(
                        Deal.objects.get(pk=fresh.pk), Stage.QUALIFICATION, by=teammate
                    ),
                )
            )
        return original()

    monkeypatch.setattr(opennow, "pending_states", change_then_states)
    _count(*opennow.as_counted())
    monkeypatch.setattr(opennow, "pending_states", original)
    assert done
    table = _table()["company"]
    assert (table["needs"][:2], table["lead"][0], table.get("qualification")) == (
        (1, Decimal("10000")),
        1,
        None,
    )
    changes.apply_pending()
    assert not PendingChange.objects.exists()
    assert _table() == _fresh()
    table = _table()["company"]
    assert (table["needs"][:2], table.get("lead"), table["qualification"][0]) == (
        (1, Decimal("4000")),
        None,
        1,
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_no_change_is_applied_while_a_count_reads_or_replaces(on_postgres, rep, monkeypatch):
    deal = make_deal(rep, at=days_ago(6))
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    domain.move_forward(deal, Stage.QUALIFICATION, by=rep)
    steps = Interleaving()
    monkeypatch.setattr(opennow, "pending_states", steps.held(opennow.pending_states, "count read"))
    monkeypatch.setattr(opennow, "replace", steps.noted(opennow.replace, "count replaced"))
    counted = opennow.as_counted()
    run_together(lambda: _count(*counted), steps.then(changes.apply_pending, "applied"))
    assert steps.order == ["count read", "count replaced", "applied"]
    assert not PendingChange.objects.exists()
    assert _table() == _fresh()
