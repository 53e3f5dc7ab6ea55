"""Time series behind the company-level KPIs, for every period of a grain at once.

Several company KPIs look at a moment rather than a period: the open opportunities at
a period's start, the reps active in it, the trailing 12 months of outcomes, the
customers active at a boundary (for churn and CLV). Asking the database once per period
costs a scan per period (a year of days is 365 scans). Every one of those moments is a
local midnight (a period boundary), so each question is answered exactly by counting
*local days*: one grouped query per population (by owner or company and local day),
then prefix sums or difference arrays over days, read at each boundary.

Equivalences used (m = the local midnight starting day D):
``x < m`` ⇔ ``local_date(x) < D``; ``x ≥ year_before(m)`` ⇔ ``local_date(x) ≥
year_before_day(D)``.
"""

import bisect
import datetime
import functools
from collections import defaultdict
from decimal import Decimal

from django.db.models import Count, DateField, F, Q, Sum
from django.db.models.functions import Coalesce, Greatest, TruncDate

from funnel.models import Company, Deal
from funnel.stages import Status
from kpis.ledger import MICROSECONDS_PER_DAY, microseconds
from kpis.periods import tz

ONE_DAY = datetime.timedelta(days=1)


def year_before_day(day):
    """The same date one calendar year earlier (Feb 29 -> Feb 28), as ``year_before``
    does for a local midnight."""
    try:
        return day.replace(year=day.year - 1)
    except ValueError:
        return day.replace(year=day.year - 1, day=28)


@functools.lru_cache(maxsize=8192)
def last_day_in_window(day):
    """The last boundary day D whose trailing year [year_before_day(D), D) still
    contains ``day``."""
    try:
        candidate = day.replace(year=day.year + 1)
    except ValueError:  # Feb 29
        candidate = day.replace(year=day.year + 1, day=28)
    while year_before_day(candidate + ONE_DAY) <= day:
        candidate += ONE_DAY
    while year_before_day(candidate) > day:
        candidate -= ONE_DAY
    return candidate


def _local_day(field):
    return TruncDate(field, tzinfo=tz())


class DayCounter:
    """Per key (an owner, a company...), values per local day; ``before(key, day)`` is
    the total of the days strictly before ``day``."""

    def __init__(self, fields):
        self.fields = fields
        self.days = defaultdict(list)  # key -> sorted days
        self.cumulative = defaultdict(list)  # key -> [tuple of running totals]
        self._rows = defaultdict(dict)

    def add(self, key, day, *values):
        entry = self._rows[key].get(day)
        if entry is None:
            self._rows[key][day] = list(values)
        else:
            for i, v in enumerate(values):
                entry[i] += v

    def freeze(self):
        for key, by_day in self._rows.items():
            running = [0] * len(self.fields)
            days, cumulative = self.days[key], self.cumulative[key]
            for day in sorted(by_day):
                running = [a + (b or 0) for a, b in zip(running, by_day[day], strict=True)]
                days.append(day)
                cumulative.append(tuple(running))
        self._rows.clear()
        return self

    def before(self, key, day):
        """Totals over the days < ``day`` (a tuple, one per field)."""
        i = bisect.bisect_left(self.days.get(key, ()), day)
        return self.cumulative[key][i - 1] if i else (0,) * len(self.fields)

    def between(self, key, first, end):
        """Totals over first <= day < end."""
        a, b = self.before(key, first), self.before(key, end)
        return tuple(y - x for x, y in zip(a, b, strict=True))

    def keys(self):
        return self.days.keys()


class OwnerTimeline:
    """Per owner and local day: deals created, opportunities opened and closed, wins
    and lost opportunities. Four grouped queries in all."""

    def __init__(self):
        self.leads = DayCounter(("n",))
        for row in (
            Deal.objects.annotate(_day=_local_day("entered_lead_at"))
            .order_by()
            .values("owner_id", "_day")
            .annotate(n=Count("pk"))
        ):
            self.leads.add(row["owner_id"], row["_day"], row["n"])
        self.leads.freeze()

        # Closed deals (won or lost), by the day they closed: a deal stops counting as
        # alive for "active reps" from then on (close ≥ lead is a database constraint).
        self.closed = DayCounter(("n",))
        closed_at = Coalesce("won_at", "lost_at")
        for row in (
            Deal.objects.filter(Q(won_at__isnull=False) | Q(lost_at__isnull=False))
            .annotate(_day=_local_day(closed_at))
            .order_by()
            .values("owner_id", "_day")
            .annotate(n=Count("pk"))
        ):
            self.closed.add(row["owner_id"], row["_day"], row["n"])
        self.closed.freeze()

        # Opportunities open at a moment: entered needs before it and not closed before
        # it. ``opened`` counts needs entries; ``settled`` the opportunities both opened
        # and closed before a day (by the later of the two days), which is exact even
        # without assuming close ≥ needs.
        self.opened = DayCounter(("n",))
        for row in (
            Deal.objects.filter(entered_needs_at__isnull=False)
            .annotate(_day=_local_day("entered_needs_at"))
            .order_by()
            .values("owner_id", "_day")
            .annotate(n=Count("pk"))
        ):
            self.opened.add(row["owner_id"], row["_day"], row["n"])
        self.opened.freeze()
        self.settled = DayCounter(("n",))
        for row in (
            Deal.objects.filter(entered_needs_at__isnull=False)
            .filter(Q(won_at__isnull=False) | Q(lost_at__isnull=False))
            .annotate(
                _day=Greatest(
                    _local_day("entered_needs_at"),
                    _local_day(closed_at),
                    output_field=DateField(),
                )
            )
            .order_by()
            .values("owner_id", "_day")
            .annotate(n=Count("pk"))
        ):
            self.settled.add(row["owner_id"], row["_day"], row["n"])
        self.settled.freeze()

        # Outcomes for the trailing-12-month rates: wins (count, value, cycle) and lost
        # opportunities, by the day of the outcome.
        self.outcomes = DayCounter(("won", "value", "cycle", "lost"))
        for row in (
            Deal.objects.filter(status=Status.WON)
            .annotate(_day=_local_day("won_at"))
            .order_by()
            .values("owner_id", "_day")
            .annotate(
                n=Count("pk"),
                value=Sum("current_value_base"),
                cycle=Sum(F("won_at") - F("entered_needs_at")),
            )
        ):
            self.outcomes.add(
                row["owner_id"],
                row["_day"],
                row["n"],
                row["value"] or Decimal(0),
                0 if row["cycle"] is None else microseconds(row["cycle"]),
                0,
            )
        for row in (
            Deal.objects.filter(status=Status.LOST, entered_needs_at__isnull=False)
            .annotate(_day=_local_day("lost_at"))
            .order_by()
            .values("owner_id", "_day")
            .annotate(n=Count("pk"))
        ):
            self.outcomes.add(row["owner_id"], row["_day"], 0, Decimal(0), 0, row["n"])
        self.outcomes.freeze()

    def owners(self):
        return set(self.leads.keys())

    def active(self, owner, start, end):
        """Had a deal alive in [start, end): created before ``end`` and not closed
        before ``start``."""
        return self.leads.before(owner, end)[0] - self.closed.before(owner, start)[0] > 0

    def open_opportunities(self, owner, day):
        return self.opened.before(owner, day)[0] - self.settled.before(owner, day)[0]

    def trailing_outcomes(self, owner, day):
        """Wins, their value and cycle days, and lost opportunities in the 12 months
        before ``day``."""
        won, value, cycle, lost = self.outcomes.between(owner, year_before_day(day), day)
        days = Decimal(cycle) / MICROSECONDS_PER_DAY
        return {"won": won, "value": value, "cycle": days, "lost": lost}


class CustomerTimeline:
    """Customers active at each boundary day, churn between two boundaries, repeat
    customers and CLV inputs, from one query over won deals and one over churned
    companies.

    A company is active at day D (the local midnight starting it) when it won a deal in
    [year_before(D), D) and was not marked churned before D. Each won deal on day d
    makes its company active over D in [d + 1, last_day_in_window(d)], cut at the churn
    date; a company's days of activity are the union of those windows (merged
    intervals, ``self.intervals``).
    """

    def __init__(self):
        churned = dict(
            Company.objects.filter(churned_at__isnull=False).values_list("pk", "churned_at")
        )
        windows = defaultdict(list)
        self._won = []  # (day, company, value)
        first_wins = defaultdict(list)
        zone = tz()
        for company_id, won_at, value in (
            Deal.objects.filter(status=Status.WON)
            .order_by()
            .values_list("company_id", "won_at", "current_value_base")
        ):
            day = won_at.astimezone(zone).date()
            first_wins[company_id].append(day)
            last = last_day_in_window(day)
            churn = churned.get(company_id)
            if churn is not None and churn < last:
                last = churn
            if last >= day + ONE_DAY:
                windows[company_id].append((day + ONE_DAY, last))
                self._won.append((day + ONE_DAY, last, value or Decimal(0)))
        self.intervals = {c: _merge(w) for c, w in windows.items()}
        # Repeat customers: the day of each company's first and second win.
        self.first_win, self.second_win = [], []
        for days in first_wins.values():
            days.sort()
            self.first_win.append(days[0])
            if len(days) > 1:
                self.second_win.append(days[1])
        self.first_win.sort()
        self.second_win.sort()
        self._active_days = _DayRanges(
            [(a, b, 1) for ivs in self.intervals.values() for a, b in ivs]
        )
        self._value_days = _DayRanges(self._won)

    def active_count(self, day):
        return self._active_days.at(day)

    def active_value(self, day):
        """Σ value of the deals won in the trailing year of ``day`` by companies still
        active at it (not churned)."""
        return self._value_days.at(day)

    def customers_before(self, day):
        """(companies with a win before ``day``, those with two or more)."""
        return (
            bisect.bisect_left(self.first_win, day),
            bisect.bisect_left(self.second_win, day),
        )

    def lost_between(self, pairs):
        """For each (X, Y) with X < Y, both ascending: how many companies active at X are
        not active at Y."""
        xs = [x for x, _ in pairs]
        ys = [y for _, y in pairs]
        diff = [0] * (len(pairs) + 1)
        for ivs in self.intervals.values():
            # Most companies are active at none of the Xs (a recompute of a few
            # periods asks about a few boundaries): one look skips them.
            first = bisect.bisect_left(xs, ivs[0][0])
            if first == len(xs) or xs[first] > ivs[-1][1]:
                continue
            gaps = [(b + ONE_DAY, ivs[k + 1][0] - ONE_DAY) for k, (_, b) in enumerate(ivs[:-1])]
            gaps.append((ivs[-1][1] + ONE_DAY, datetime.date.max))
            for a, b in ivs:
                lo_i = bisect.bisect_left(xs, a)
                hi_i = bisect.bisect_right(xs, b)  # pairs lo_i..hi_i-1 have X in [a, b]
                if lo_i >= hi_i:
                    continue
                for p, q in gaps:
                    if p <= b:
                        continue
                    # Of those, the pairs whose Y falls in the gap [p, q].
                    lo = max(lo_i, bisect.bisect_left(ys, p))
                    hi = min(hi_i, bisect.bisect_right(ys, q))
                    if lo < hi:
                        diff[lo] += 1
                        diff[hi] -= 1
                    if p > ys[hi_i - 1]:
                        break
        out, running = [], 0
        for i in range(len(pairs)):
            running += diff[i]
            out.append(running)
        return out


def _merge(windows):
    windows.sort()
    merged = [list(windows[0])]
    for a, b in windows[1:]:
        if a <= merged[-1][1] + ONE_DAY:
            if b > merged[-1][1]:
                merged[-1][1] = b
        else:
            merged.append([a, b])
    return [tuple(w) for w in merged]


class _DayRanges:
    """Σ of values over inclusive day ranges, read at any day (a difference array)."""

    def __init__(self, ranges):
        delta = defaultdict(int)
        for a, b, value in ranges:
            delta[a] += value
            delta[b + ONE_DAY] -= value
        self.days = sorted(delta)
        self.totals = []
        running = 0
        for day in self.days:
            running += delta[day]
            self.totals.append(running)

    def at(self, day):
        i = bisect.bisect_right(self.days, day)
        return self.totals[i - 1] if i else 0
