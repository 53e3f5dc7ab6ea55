"""An incremental recompute of a deal's change: the family KPIs of the slices whose
ledger rows it changed only, and the larger periods' medians in a step of their own
(kpis.recompute.recompute_days, refresh_stale_medians)."""

import datetime
from decimal import Decimal

from django.utils import timezone

from funnel import domain
from funnel.stages import Stage
from kpis import changes, company, dirty, ledger, reading, recompute
from kpis.compute import COMPANY_COMPUTED, Measures
from kpis.models import DirtyDay, KpiSnapshot, PeriodMeasures, StaleMedian
from kpis.periods import Grain, Period, local_date, today
from tests.factories import days_ago, deal_in_stage, make_deal, won_deal
from tests.kpis.builders import snapshot_rows


def _whole():
    return dict(DirtyDay.objects.values_list("day", "whole"))


def test_a_deals_mark_never_narrows_a_mark_for_every_slice(db):
    first, second = today(), today() - datetime.timedelta(days=1)
    dirty.mark_days([first])  # spend, a target...: every slice
    dirty.mark_days([first, second], whole=False)  # a deal's change
    assert _whole() == {first: True, second: False}
    dirty.mark_days([second])
    assert _whole() == {first: True, second: True}


def test_a_claim_tells_whether_every_slice_is_asked_or_a_worker_died(db):
    day = today()
    dirty.mark_days([day], whole=False)
    claimed = dirty.claim(10)
    assert (list(claimed), claimed.whole, claimed.retried) == (
        [(day, DirtyDay.objects.get().generation)],
        False,
        False,
    )
    # The worker died holding it: what its first attempt stored cannot be told.
    DirtyDay.objects.update(claimed_until=timezone.now() - datetime.timedelta(seconds=1))
    again = dirty.claim(10)
    assert (list(again), again.whole, again.retried) == (list(claimed), True, True)
    dirty.release(again)
    dirty.mark_days([day])
    whole = dirty.claim(10)
    assert (whole.whole, whole.retried) == (True, False)


def _month_row(code, slice_key):
    month = Period.containing(Grain.MONTH, today())
    return KpiSnapshot.objects.get(
        kpi=code, grain=Grain.MONTH, period_start=month.start, slice=slice_key, breakdown=""
    )


def test_a_deals_change_recomputes_the_family_kpis_of_its_own_slices(rep, outsider):
    """The outsider's month reading is made wrong on purpose: a deal of the rep does not
    read or rewrite it (their rows did not change), the rep's and the company's move,
    and a mark for every slice (here today's, as the hourly refresh makes) repairs it."""
    make_deal(rep, at=days_ago(1))
    make_deal(outsider, at=days_ago(1))
    recompute.recompute_all()
    # The changes still pending (a full recompute read them) are applied: they touch
    # their deals' slices (``dirty.DEALS``).
    recompute.recompute_all_dirty()
    KpiSnapshot.objects.filter(pk=_month_row("leads", f"rep:{outsider.pk}").pk).update(
        value=Decimal(99)
    )
    make_deal(rep, at=timezone.now())
    assert _whole() == {today(): False}
    recompute.recompute_all_dirty()
    assert _month_row("leads", f"rep:{rep.pk}").value == 2
    assert _month_row("leads", "company").value == 3
    assert _month_row("leads", f"rep:{outsider.pk}").value == 99
    # The company-level KPIs of the deal's slices too, not of the outsider's.
    assert "new_leads_per_rep" in COMPANY_COMPUTED
    assert _month_row("new_leads_per_rep", "company").numerator == 3
    outsiders = _month_row("new_leads_per_rep", f"team:{outsider.team_id}")
    KpiSnapshot.objects.filter(pk=outsiders.pk).update(value=Decimal(99))
    make_deal(rep, at=timezone.now())
    recompute.recompute_all_dirty()
    assert _month_row("new_leads_per_rep", "company").numerator == 4
    assert _month_row("new_leads_per_rep", f"team:{outsider.team_id}").value == 99
    dirty.mark_days([today()])
    recompute.recompute_all_dirty()
    assert _month_row("leads", f"rep:{outsider.pk}").value == 1
    assert _month_row("new_leads_per_rep", f"team:{outsider.team_id}").value == 1
    incremental = snapshot_rows()
    recompute.recompute_all()
    assert snapshot_rows() == incremental


def _days_in_one_year():
    """How many days ago a nine-day stretch inside one calendar year starts."""
    day_of_year = today().timetuple().tm_yday
    return 9 if day_of_year > 10 else day_of_year + 20


def _year_median(year, slice_key, name="stay_lead.days"):
    row = PeriodMeasures.objects.get(
        grain=Grain.YEAR, period_start=year.start, slice=slice_key, breakdown=""
    )
    return row.medians.get(name)


def _year_snapshot(year, slice_key):
    return KpiSnapshot.objects.get(
        kpi="time_in_lead_days_median",
        grain=Grain.YEAR,
        period_start=year.start,
        slice=slice_key,
        breakdown="",
    ).value


def test_the_larger_medians_of_the_changed_slices_follow_in_their_own_step(
    rep, outsider, monkeypatch
):
    """A second lead of the rep that qualifies after three days: the rep's median stay
    in lead over the year goes from 1 to 2 days once the stale medians are taken; the
    days' step leaves the stored ones and marks those of the changed slices."""
    start = _days_in_one_year()
    year = Period.containing(Grain.YEAR, local_date(days_ago(start)))
    deal_in_stage(rep, Stage.NEEDS, start_days_ago=start)
    deal_in_stage(outsider, Stage.NEEDS, start_days_ago=start - 1)
    recompute.recompute_all()
    deal = make_deal(rep, at=days_ago(start - 5))
    domain.move_forward(deal, Stage.QUALIFICATION, by=rep, at=days_ago(start - 8))
    while recompute.recompute_dirty():
        pass
    assert Decimal(_year_median(year, f"rep:{rep.pk}")) == 1
    assert _year_snapshot(year, f"rep:{rep.pk}") == 1
    # Until then the year reads as being recomputed (its days are done), and the
    # sweep as not finished.
    day = Period.containing(Grain.DAY, local_date(days_ago(start - 8)))
    assert (reading.is_dirty(day), reading.is_dirty(year), dirty.pending()) == (False, True, True)
    stale = set(
        StaleMedian.objects.filter(grain=Grain.YEAR, family="stay_lead").values_list(
            "period_start", "slice"
        )
    )
    assert stale == {
        (year.start, key) for key in ("company", f"rep:{rep.pk}", f"team:{rep.team_id}")
    }
    # Only the median KPIs can move: the company-level KPIs (open deals, pipeline,
    # customers...) are not computed again.
    with monkeypatch.context() as patch:
        patch.setattr(company, "compute", None)
        assert recompute.refresh_stale_medians() > 0
    assert Decimal(_year_median(year, f"rep:{rep.pk}")) == 2
    assert _year_snapshot(year, f"rep:{rep.pk}") == 2
    assert _year_snapshot(year, "company") == 1
    assert not StaleMedian.objects.exists()
    assert (reading.is_dirty(year), dirty.pending()) == (False, False)
    incremental = snapshot_rows()
    recompute.recompute_all()
    assert snapshot_rows() == incremental


def test_a_retried_batch_takes_every_slices_larger_medians_again(rep, outsider):
    """A worker died after storing a batch's days: its retry sees no change in them,
    so it marks every slice's medians of their periods; a wrong one is repaired."""
    start = _days_in_one_year()
    year = Period.containing(Grain.YEAR, local_date(days_ago(start)))
    deal_in_stage(rep, Stage.NEEDS, start_days_ago=start)
    deal_in_stage(outsider, Stage.NEEDS, start_days_ago=start - 1)
    recompute.recompute_all()
    row = PeriodMeasures.objects.get(
        grain=Grain.YEAR, period_start=year.start, slice=f"rep:{outsider.pk}", breakdown=""
    )
    row.medians["stay_lead.days"] = "99"
    row.save(update_fields=["medians"])
    make_deal(rep, at=days_ago(start - 5))
    claimed = dirty.claim(10)
    recompute.recompute_days([day for day, _ in claimed], claimed)  # then the worker died
    DirtyDay.objects.update(claimed_until=timezone.now() - datetime.timedelta(seconds=1))
    StaleMedian.objects.all().delete()
    recompute.recompute_all_dirty()
    assert Decimal(_year_median(year, f"rep:{outsider.pk}")) == 1
    assert not StaleMedian.objects.exists()


def test_releasing_a_batch_clears_its_marks_in_a_fixed_number_of_queries(
    db, django_assert_num_queries
):
    """Forty marks are released in the same few queries as one: a mark made again
    while its day was recomputed stays, handed back unclaimed; the others go."""
    days = [today() - datetime.timedelta(days=n) for n in range(40)]
    dirty.mark_days(days, whole=False)
    claimed = dirty.claim(None)
    dirty.mark_days([days[3]], whole=False)
    with django_assert_num_queries(5):  # savepoint, lock and read, delete, update, release
        dirty.release(claimed)
    assert list(DirtyDay.objects.values_list("day", "claimed_until")) == [(days[3], None)]
    keys = [(Grain.YEAR, days[0].replace(month=1, day=1), "won", s) for s in ("company", "")]
    dirty.mark_medians(keys)
    medians = dirty.claim_medians()
    dirty.release_medians(medians)
    assert not StaleMedian.objects.exists()


def test_every_company_level_row_is_one_a_scoped_write_replaces(rep, outsider):
    """A scoped recompute replaces the company-level KPIs of every slice
    (``COMPANY_COMPUTED``): every row ``company.compute`` gives must be one of them,
    or a slice outside the scope would be written twice."""
    deal_in_stage(rep, Stage.NEGOTIATION)
    make_deal(outsider, at=days_ago(3))
    recompute.recompute_all()
    month = Period.containing(Grain.MONTH, today())
    measures = ledger.load(Grain.MONTH, [month.start, month.previous().start], Measures())
    now = timezone.now()
    rows = company.compute(Grain.MONTH, [month], measures, {}, now, now)
    slices = {row.slice for row in rows}
    assert {"company", f"rep:{rep.pk}", f"rep:{outsider.pk}"} <= slices
    assert {row.kpi for row in rows} <= COMPANY_COMPUTED
    assert {"open_deals_negotiation", "new_leads_per_rep", "revenue"} <= {row.kpi for row in rows}


def test_the_company_level_medians_alone_are_those_of_the_whole_computation(rep, outsider):
    """The medians step computes the company-level KPIs read from medians alone
    (``company.medians_only``): the very rows ``company.compute`` gives for them."""
    won_deal(rep, start_days_ago=40)
    won_deal(rep, start_days_ago=60)
    won_deal(outsider, start_days_ago=50)
    recompute.recompute_all()
    year = Period.containing(Grain.YEAR, local_date(days_ago(3)))  # won_deal wins then
    measures = ledger.load(Grain.YEAR, [year.start, year.previous().start], Measures())
    now = timezone.now()
    full = company.compute(Grain.YEAR, [year], measures, {}, now, now)
    alone = company.medians_only(Grain.YEAR, [year], measures, now, now)
    assert alone == [row for row in full if row.kpi in company.MEDIAN_KPIS]
    values = {row.slice: row.value for row in alone}
    assert values["company"] is not None and values[f"rep:{rep.pk}"] is not None
    assert {row.kpi for row in alone} == set(company.MEDIAN_KPIS)


def _month_breakdown(code, slice_key, breakdown):
    month = Period.containing(Grain.MONTH, today())
    return KpiSnapshot.objects.get(
        kpi=code, grain=Grain.MONTH, period_start=month.start, slice=slice_key, breakdown=breakdown
    )


def test_a_deals_change_recomputes_the_breakdowns_whose_rows_it_moved(rep):
    """A breakdown's KPIs read its own ledger row alone: a change recomputes and
    compares the breakdowns whose rows it moved (``dirty.BREAKDOWNS``), the others are
    neither read nor rewritten (the "fair" reading made wrong on purpose stays so)."""
    make_deal(rep, at=days_ago(1), heard_from="fair")
    make_deal(rep, at=days_ago(1), heard_from="web")
    recompute.recompute_all()
    fair = _month_breakdown("leads", f"rep:{rep.pk}", "source:fair")
    KpiSnapshot.objects.filter(pk=fair.pk).update(value=Decimal(99))
    deal = make_deal(rep, at=timezone.now(), heard_from="web")
    changes.apply_pending()  # the day marked with what moved (``DirtyDay.scope``)
    assert DirtyDay.objects.get(day=today()).scope[dirty.BREAKDOWNS] == ["source:web"]
    recompute.recompute_all_dirty()
    assert _month_breakdown("leads", f"rep:{rep.pk}", "source:web").value == 2
    assert _month_breakdown("leads", "company", "source:web").value == 2
    assert _month_breakdown("leads", f"rep:{rep.pk}", "source:fair").value == 99
    # A change of the source alone moves two breakdowns and no total.
    domain.update_deal(deal, by=rep, heard_from="fair")
    changes.apply_pending()
    stored = DirtyDay.objects.get(day=today()).scope
    assert stored[dirty.BREAKDOWNS] == ["source:fair", "source:web"]
    assert stored["lead"] == sorted(["company", f"rep:{rep.pk}", f"team:{rep.team_id}"])
    recompute.recompute_all_dirty()
    assert _month_breakdown("leads", f"rep:{rep.pk}", "source:web").value == 1
    assert _month_breakdown("leads", f"rep:{rep.pk}", "source:fair").value == 2
    incremental = snapshot_rows()
    recompute.recompute_all()
    assert snapshot_rows() == incremental


def test_only_a_change_of_the_open_pipeline_or_the_won_value_recomputes_the_pipeline_kpis(rep):
    """The weighted pipeline and coverage read the ledger's ``pipeline`` family (open
    opportunities by expected close date) and the won value: a new lead moves neither,
    and the weighted pipeline's reading made wrong on purpose stays so; a change of an
    opportunity's expected close date moves its value from one period to another."""
    close = today() + datetime.timedelta(days=1)
    deal = deal_in_stage(rep, Stage.OFFER, start_days_ago=10)
    domain.update_deal(deal, by=rep, expected_close_date=close)
    # The data span reaches 90 days ahead: the dates set below fall inside it.
    far = deal_in_stage(rep, Stage.NEEDS, start_days_ago=10)
    domain.update_deal(far, by=rep, expected_close_date=close + datetime.timedelta(days=90))
    recompute.recompute_all()
    month = Period.containing(Grain.MONTH, close)
    weighted = KpiSnapshot.objects.get(
        kpi="weighted_pipeline", grain=Grain.MONTH, period_start=month.start, slice="company"
    )
    assert weighted.numerator > 0
    KpiSnapshot.objects.filter(pk=weighted.pk).update(value=Decimal(99))
    make_deal(rep, at=timezone.now())
    recompute.recompute_all_dirty()
    weighted.refresh_from_db()
    assert weighted.value == 99
    later = Period.containing(Grain.MONTH, close).end + datetime.timedelta(days=3)
    domain.update_deal(deal, by=rep, expected_close_date=later)
    recompute.recompute_all_dirty()
    before = weighted.numerator
    weighted.refresh_from_db()
    assert (weighted.value, weighted.numerator) == (0, 0)  # nothing left to weigh
    moved = KpiSnapshot.objects.get(
        kpi="weighted_pipeline",
        grain=Grain.MONTH,
        period_start=Period.containing(Grain.MONTH, later).start,
        slice=f"rep:{rep.pk}",
    )
    assert moved.numerator == before
    incremental = snapshot_rows()
    recompute.recompute_all()
    assert snapshot_rows() == incremental


def test_a_change_that_moves_no_sum_still_moves_its_deals_open_value_now(rep, outsider):
    """A lead's value is in no family's sums, only in the open deals now: the change
    puts the deal's slices in its scope (``dirty.DEALS``), not the outsider's."""
    deal = make_deal(rep, at=days_ago(2), estimated_value=Decimal("1000"))
    make_deal(outsider, at=days_ago(2), estimated_value=Decimal("500"))
    recompute.recompute_all()
    recompute.recompute_all_dirty()
    assert _month_row("open_value_lead", f"rep:{rep.pk}").value == 1000
    KpiSnapshot.objects.filter(pk=_month_row("open_value_lead", f"rep:{outsider.pk}").pk).update(
        value=Decimal(99)
    )
    domain.update_deal(deal, by=rep, estimated_value=Decimal("2500"))
    assert changes.apply_pending()[today()][dirty.DEALS] == {
        "company",
        f"team:{rep.team_id}",
        f"rep:{rep.pk}",
    }
    recompute.recompute_all_dirty()
    assert _month_row("open_value_lead", f"rep:{rep.pk}").value == 2500
    assert _month_row("open_value_lead", "company").value == 3000
    assert _month_row("open_value_lead", f"rep:{outsider.pk}").value == 99
