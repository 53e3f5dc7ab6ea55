"""The customer timeline's churn count against a per-company reference."""

import datetime
import itertools

from hypothesis import given
from hypothesis import strategies as st

from kpis.timeline import CustomerTimeline, _merge

DAY0 = datetime.date(2025, 1, 1)
days = st.integers(min_value=0, max_value=60).map(lambda n: DAY0 + datetime.timedelta(days=n))
window = st.tuples(days, st.integers(min_value=0, max_value=20)).map(
    lambda t: (t[0], t[0] + datetime.timedelta(days=t[1]))
)


def timeline(companies):
    out = object.__new__(CustomerTimeline)
    out.intervals = {c: _merge(list(ws)) for c, ws in enumerate(companies) if ws}
    return out


def active(ivs, day):
    return any(a <= day <= b for a, b in ivs)


@given(
    companies=st.lists(st.lists(window, max_size=4), max_size=12),
    boundaries=st.lists(days, min_size=2, max_size=8, unique=True),
)
def test_lost_between_counts_the_companies_active_at_x_and_not_at_y(companies, boundaries):
    boundaries.sort()
    pairs = list(itertools.pairwise(boundaries))
    got = timeline(companies).lost_between(pairs)
    expected = [
        sum(1 for ws in companies if ws and active(ws, x) and not active(ws, y)) for x, y in pairs
    ]
    assert got == expected


def test_lost_between_with_one_company_active_only_at_the_start():
    line = timeline([[(DAY0, DAY0 + datetime.timedelta(days=9))], [(DAY0, DAY0)]])
    x, y = DAY0, DAY0 + datetime.timedelta(days=10)
    assert line.lost_between([(x, y), (DAY0 + datetime.timedelta(days=5), y)]) == [2, 1]
