"""The customer timeline's churn count against a per-company reference; the owner
timeline read from the ledger against the one read from the deals."""

import datetime
import itertools
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funnel.stages import Stage, Status
from kpis import recompute
from kpis.ledger import MICROSECONDS_PER_DAY, microseconds
from kpis.timeline import CustomerTimeline, LedgerOwners, OwnerTimeline, _merge
from tests.factories import days_ago, lost_reason
from tests.kpis.builders import deal_row, save_deals, won_row

DAY0 = datetime.date(2025, 1, 1)
days = st.integers(min_value=0, max_value=60).map(lambda n: DAY0 + datetime.timedelta(days=n))
window = st.tuples(days, st.integers(min_value=0, max_value=20)).map(
    lambda t: (t[0], t[0] + datetime.timedelta(days=t[1]))
)


def timeline(companies, few_pairs=CustomerTimeline.FEW_PAIRS):
    out = object.__new__(CustomerTimeline)
    out.intervals = {c: _merge(list(ws)) for c, ws in enumerate(companies) if ws}
    # Which way the pairs are counted: compared sets of active companies (up to
    # ``FEW_PAIRS`` pairs) or one pass over every company's intervals.
    out.FEW_PAIRS = few_pairs
    return out


def active(ivs, day):
    return any(a <= day <= b for a, b in ivs)


@given(
    companies=st.lists(st.lists(window, max_size=4), max_size=12),
    boundaries=st.lists(days, min_size=2, max_size=8, unique=True),
    few_pairs=st.sampled_from([0, CustomerTimeline.FEW_PAIRS]),
)
def test_lost_between_counts_the_companies_active_at_x_and_not_at_y(
    companies, boundaries, few_pairs
):
    boundaries.sort()
    pairs = list(itertools.pairwise(boundaries))
    got = timeline(companies, few_pairs).lost_between(pairs)
    expected = [
        sum(1 for ws in companies if ws and active(ws, x) and not active(ws, y)) for x, y in pairs
    ]
    assert got == expected


@pytest.mark.parametrize("few_pairs", [0, CustomerTimeline.FEW_PAIRS])
def test_lost_between_with_one_company_active_only_at_the_start(few_pairs):
    line = timeline([[(DAY0, DAY0 + datetime.timedelta(days=9))], [(DAY0, DAY0)]], few_pairs)
    x, y = DAY0, DAY0 + datetime.timedelta(days=10)
    assert line.lost_between([(x, y), (DAY0 + datetime.timedelta(days=5), y)]) == [2, 1]
    # The second company's only day active is DAY0.
    assert line.lost_between([(DAY0, DAY0 + datetime.timedelta(days=1))]) == [1]


@pytest.mark.django_db
def test_the_owner_counts_read_from_the_ledger_equal_the_deal_scan(rep, teammate):
    """``LedgerOwners`` (an incremental recompute's owner timeline, read from the
    ledger's rep rows) answers every question as ``OwnerTimeline`` (the deals) does, at
    every boundary: month starts and mid-month days, before, during and after the data.
    The deals cover each count: open leads, open opportunities, wins, losses before and
    after needs, and a loss recorded before the needs stamp (settled by the later day)."""
    price = lost_reason("price")

    def lost(owner, lead_days_ago, lost_days_ago, reached, **kw):
        return deal_row(
            owner,
            days_ago(lead_days_ago),
            reached=reached,
            status=Status.LOST,
            lost_at=days_ago(lost_days_ago),
            lost_reason=price,
            **kw,
        )

    recent_win = won_row(rep, days_ago(150), days_ago(20), Decimal("800.25"))
    save_deals(
        [
            deal_row(rep, days_ago(300)),
            deal_row(rep, days_ago(200), reached=Stage.OFFER),
            won_row(rep, days_ago(400), days_ago(380), Decimal("1200.50")),
            recent_win,
            won_row(teammate, days_ago(90), days_ago(45), Decimal("99.99")),
            lost(teammate, 120, 60, Stage.NEEDS),
            lost(rep, 70, 65, Stage.QUALIFICATION),
            # Lost before its needs stamp: settled on day 30, the later of the two.
            lost(
                teammate,
                50,
                40,
                Stage.NEEDS,
                at={Stage.QUALIFICATION: days_ago(49), Stage.NEEDS: days_ago(30)},
            ),
        ]
    )
    recompute.recompute_all()
    scanned, ledger = OwnerTimeline(), LedgerOwners()
    assert ledger.owners() == scanned.owners() == {rep.pk, teammate.pk}
    first = days_ago(420).date()
    boundaries = [first + datetime.timedelta(days=n) for n in range(0, 440, 3)]
    boundaries += [d.replace(day=1) for d in boundaries]
    for owner in (rep.pk, teammate.pk):
        for day in boundaries:
            end = day + datetime.timedelta(days=10)
            assert ledger.active(owner, day, end) == scanned.active(owner, day, end), day
            assert ledger.open_opportunities(owner, day) == scanned.open_opportunities(
                owner, day
            ), day
            assert ledger.trailing_outcomes(owner, day) == scanned.trailing_outcomes(owner, day), (
                day
            )
    # Two answers spelled out. 100 days ago the teammate had one open opportunity (the
    # one lost 60 days ago); over the last year the rep won one deal.
    today = days_ago(0).date()
    assert ledger.open_opportunities(teammate.pk, today - datetime.timedelta(days=100)) == 1
    utc = datetime.UTC
    cycle = recent_win.won_at.astimezone(utc) - recent_win.entered_needs_at.astimezone(utc)
    assert ledger.trailing_outcomes(rep.pk, today) == {
        "won": 1,
        "value": Decimal("800.25"),
        "cycle": Decimal(microseconds(cycle)) / MICROSECONDS_PER_DAY,
        "lost": 0,
    }


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_customer_timeline_is_kept_while_the_won_deals_and_churn_dates_are_unchanged(
    on_postgres, rep, django_assert_num_queries
):
    """Between recomputes a process keeps the customer timeline, checked unchanged by
    two queries (the churn dates, a checksum of the won deals); a win, a won deal's
    value, company or moment, and a churn date each build it again."""
    from funnel.models import Company, Deal
    from kpis.timeline import customer_timeline, job_tag

    first = won_row(rep, days_ago(100), days_ago(50), Decimal("100"))
    second = won_row(rep, days_ago(90), days_ago(40), Decimal("200"))
    save_deals([first, second])
    today = days_ago(0).date()
    built = customer_timeline()
    assert built.active_count(today) == 2
    assert built.active_value(today) == Decimal("300")
    with django_assert_num_queries(2):
        assert customer_timeline() is built
    # A third win.
    save_deals([won_row(rep, days_ago(30), days_ago(10), Decimal("50"), company=first.company)])
    third = customer_timeline()
    assert third is not built
    assert (third.active_count(today), third.active_value(today)) == (2, Decimal("350"))
    assert customer_timeline() is third
    # A won deal's value, then its company, then its moment.
    Deal.objects.filter(pk=second.pk).update(current_value_base=Decimal("250"))
    valued = customer_timeline()
    assert valued is not third
    assert valued.active_value(today) == Decimal("400")
    Deal.objects.filter(pk=second.pk).update(company=first.company)
    moved = customer_timeline()
    assert moved is not valued
    assert moved.active_count(today) == 1
    before_move = days_ago(37).date()
    assert moved.active_value(before_move) == Decimal("350")
    Deal.objects.filter(pk=second.pk).update(won_at=days_ago(35))
    later = customer_timeline()
    assert later is not moved
    assert later.active_value(before_move) == Decimal("100")
    # A churn date.
    Company.objects.filter(pk=first.company_id).update(churned_at=days_ago(5).date())
    churned = customer_timeline()
    assert churned is not later
    assert churned.active_count(today) == 0
    assert customer_timeline() is churned
    # A full recompute builds it afresh, and keeps that one.
    rebuilt = customer_timeline(fresh=True)
    assert rebuilt is not churned
    assert customer_timeline() is rebuilt
    # A fanned-out one's parts: afresh once per job, then kept for its other parts.
    job = customer_timeline(fresh=job_tag(7))
    assert job is not rebuilt
    assert customer_timeline(fresh=job_tag(7)) is job
    assert customer_timeline() is job
    assert customer_timeline(fresh=job_tag(8)) is not job
