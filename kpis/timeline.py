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
import threading
from collections import defaultdict
from decimal import Decimal
from typing import NamedTuple

from django.db import connection
from django.db.models import Count, DateField, F, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce, Greatest, TruncDate

from funnel.models import Company, Deal
from funnel.stages import Status
from kpis.ledger import MICROSECONDS_PER_DAY, microseconds
from kpis.models import PeriodMeasures
from kpis.periods import Grain, Period, tz

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

    def keys(self):
        return self.days.keys()


class OwnerTotals(NamedTuple):
    """An owner's counts over every day before a boundary day."""

    leads: int
    closed: int  # won or lost, by the day of the outcome
    opened: int  # needs entries
    settled: int  # opportunities opened and closed, by the later of the two days
    won: int
    value: Decimal  # of the wins
    cycle: int  # Σ needs → win of the wins, in microseconds
    lost_opps: int  # losses after needs


class OwnerAnswers:
    """The questions the company KPIs ask about an owner at a boundary day, answered
    from ``totals(owner, day)``: ``OwnerTimeline`` counts them from the deals,
    ``LedgerOwners`` from the ledger."""

    def totals(self, owner, day) -> OwnerTotals:
        raise NotImplementedError

    def active(self, owner, start, end):
        """Had a deal alive in [start, end): created before ``end`` and not closed
        before ``start``."""
        return self.totals(owner, end).leads - self.totals(owner, start).closed > 0

    def open_opportunities(self, owner, day):
        totals = self.totals(owner, day)
        return totals.opened - totals.settled

    def trailing_outcomes(self, owner, day):
        """Wins, their value and cycle days, and lost opportunities in the 12 months
        before ``day``."""
        then, now = self.totals(owner, year_before_day(day)), self.totals(owner, day)
        return {
            "won": now.won - then.won,
            "value": now.value - then.value,
            "cycle": Decimal(now.cycle - then.cycle) / MICROSECONDS_PER_DAY,
            "lost": now.lost_opps - then.lost_opps,
        }


class OwnerTimeline(OwnerAnswers):
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

    def totals(self, owner, day):
        (leads,), (closed,) = self.leads.before(owner, day), self.closed.before(owner, day)
        (opened,), (settled,) = self.opened.before(owner, day), self.settled.before(owner, day)
        return OwnerTotals(leads, closed, opened, settled, *self.outcomes.before(owner, day))


#: What ``LedgerOwners`` reads from the ledger's rep rows: (family, measure) paths of
#: each counter, in the order of its totals.
LEDGER_PATHS = (
    ("leads", "lead__n"),
    ("won", "won__n"),
    ("lost", "lost__n"),
    ("opened", "needs__n"),
    ("settled", "settled__n"),
    ("value", "won__value"),
    ("cycle", "won__cycle_days__us"),
    ("lost_opps", "lost__opp_n"),
)
_VALUE = [name for name, _ in LEDGER_PATHS].index("value")


def _ledger_number(index, value):
    if value is None:
        return 0
    return Decimal(value) if index == _VALUE else int(value)


class LedgerOwners(OwnerAnswers):
    """``OwnerTimeline``'s answers read from the measure ledger (kpis/ledger.py) instead
    of the deals: the same counts are day-grain families there (leads, wins, losses,
    needs entries, "settled"), kept per owner in the rep rows. A total over the days
    before D is the owner's month rows before D's month plus its day rows from the
    month's first day to D: a few thousand small rows, where the deal scan reads every
    deal six times. For a recompute of a few periods (an incremental one); a full
    recompute rebuilds the ledger itself and scans the deals (``OwnerTimeline``).

    Read lazily, at the first question: the ledger's day rows must be current by then
    (``compute.store_days`` replaces every dirty day's rows before it computes any
    snapshot)."""

    def __init__(self):
        self._months = None  # owner -> ([month starts], [running totals])
        self._days = {}  # month -> [(day, owner, values)] of its day rows
        self._before = {}  # day -> {owner: totals of the days before it}

    def _rows(self, grain, **filters):
        columns = {f"_{name}": KT(f"sums__{path}") for name, path in LEDGER_PATHS}
        rows = PeriodMeasures.objects.filter(
            grain=grain, breakdown="", slice__startswith="rep:", **filters
        ).annotate(**columns)
        for start, slice_, *values in rows.values_list("period_start", "slice", *columns):
            numbers = [_ledger_number(i, v) for i, v in enumerate(values)]
            yield start, int(slice_.split(":", 1)[1]), numbers

    def _month_totals(self):
        if self._months is None:
            by_owner = defaultdict(list)
            for start, owner, numbers in self._rows(Grain.MONTH):
                by_owner[owner].append((start, numbers))
            self._months = {}
            for owner, rows in by_owner.items():
                rows.sort()
                starts, running, totals = [], [0] * len(LEDGER_PATHS), []
                for start, numbers in rows:
                    running = [a + b for a, b in zip(running, numbers, strict=True)]
                    starts.append(start)
                    totals.append(running)
                self._months[owner] = (starts, totals)
        return self._months

    def _day_rows(self, month):
        """The day rows of ``month``, read once for every boundary in it."""
        if month not in self._days:
            end = Period(Grain.MONTH, month).end
            self._days[month] = list(
                self._rows(Grain.DAY, period_start__gte=month, period_start__lt=end)
            )
        return self._days[month]

    def _totals_before(self, day):
        if day not in self._before:
            month = day.replace(day=1)
            out = {}
            for owner, (starts, totals) in self._month_totals().items():
                i = bisect.bisect_left(starts, month)
                out[owner] = list(totals[i - 1]) if i else [0] * len(LEDGER_PATHS)
            if day > month:
                for row_day, owner, numbers in self._day_rows(month):
                    if row_day < day:
                        entry = out.setdefault(owner, [0] * len(LEDGER_PATHS))
                        for i, v in enumerate(numbers):
                            entry[i] += v
            self._before[day] = out
        return self._before[day]

    def owners(self):
        return set(self._month_totals())

    def totals(self, owner, day):
        leads, won, lost, opened, settled, value, cycle, lost_opps = self._totals_before(day).get(
            owner
        ) or [0] * len(LEDGER_PATHS)
        return OwnerTotals(leads, won + lost, opened, settled, won, value, cycle, lost_opps)


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

    def __init__(self, churned):
        """``churned``: {company id: churn date} (``churn_dates``)."""
        self.intervals = {}
        self._won = []  # (first day active, last day active, value)
        # Repeat customers: the day of each company's first and second win.
        self.first_win, self.second_win = [], []
        # Each company's wins in day order (the local day computed by the database): its
        # windows come sorted, and its first two wins are its first two rows.
        rows = (
            Deal.objects.filter(status=Status.WON)
            .annotate(_day=_local_day("won_at"))
            .order_by("company_id", "_day")
            .values_list("company_id", "_day", "current_value_base")
        )
        company, windows, wins = None, [], 0
        for company_id, day, value in rows:
            if company_id != company:
                if windows:
                    self.intervals[company] = _merge(windows)
                company, windows, wins = company_id, [], 0
            wins += 1
            if wins == 1:
                self.first_win.append(day)
            elif wins == 2:
                self.second_win.append(day)
            last = last_day_in_window(day)
            churn = churned.get(company_id)
            if churn is not None and churn < last:
                last = churn
            if last > day:
                windows.append((day + ONE_DAY, last))
                self._won.append((day + ONE_DAY, last, value or Decimal(0)))
        if windows:
            self.intervals[company] = _merge(windows)
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

    #: Up to this many pairs, ``lost_between`` counts each pair from the intervals that
    #: end between its two boundaries (an incremental recompute asks about a few);
    #: above, one pass over every company's intervals answers all pairs (a full
    #: recompute asks about every day).
    FEW_PAIRS = 16

    @functools.cached_property
    def _by_end(self):
        """(ends, [(start, company, position in the company's intervals)]) of every
        interval, sorted by end."""
        spans = sorted(
            (b, a, c, i) for c, ivs in self.intervals.items() for i, (a, b) in enumerate(ivs)
        )
        return [b for b, _, _, _ in spans], [(a, c, i) for _, a, c, i in spans]

    def _lost(self, x, y):
        """How many companies active at ``x`` are not active at ``y`` (x < y). A company
        active at x is so through one interval (they are disjoint); if that one ends on
        or after y, it is active at y. So only the intervals ending in [x, y) can count,
        and each does unless one of the company's later intervals holds y."""
        ends, spans = self._by_end
        lost = 0
        for k in range(bisect.bisect_left(ends, x), bisect.bisect_left(ends, y)):
            a, company, i = spans[k]
            if a > x:
                continue
            later = self.intervals[company][i + 1 :]
            if not any(p <= y <= q for p, q in later):
                lost += 1
        return lost

    def lost_between(self, pairs):
        """For each (X, Y) with X < Y, both ascending: how many companies active at X are
        not active at Y."""
        if len(pairs) <= self.FEW_PAIRS:
            return [self._lost(x, y) for x, y in pairs]
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


def churn_dates():
    """{company id: churn date} of the companies marked churned."""
    return dict(Company.objects.filter(churned_at__isnull=False).values_list("pk", "churned_at"))


def _won_checksum():
    """(count, checksum) of the won deals' company, moment and value: what the customer
    timeline reads. PostgreSQL reads them off the index ``deal_won_company`` (80 ms at
    1M deals). A 64-bit hash per row, summed: any change of a row changes it, but for
    a chance of one in 2**64."""
    table = Deal._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), sum(hashtextextended(company_id::text || ' ' || won_at::text"
            f" || ' ' || coalesce(current_value_base::text, ''), 0)::numeric)"
            f" FROM {table} WHERE status = %s",
            [Status.WON],
        )
        return tuple(cursor.fetchone())


_kept = threading.local()


def customer_timeline(fresh=False):
    """The customer timeline, kept by the process from one recompute to the next while
    what it is built from is unchanged: building it reads every won deal (1.6 s at 1M
    deals); checking them unchanged, on PostgreSQL, takes a checksum off an index. The
    checksum is taken before the deals are read, so a change committed in between only
    costs a rebuild next time. Other databases build it each time. ``fresh``: True
    builds it afresh (a serial full recompute); a tag (a fanned-out full recompute's
    ``job_tag``) builds it afresh once per process for that tag, not once per part."""
    churned = churn_dates()
    if connection.vendor != "postgresql":
        return CustomerTimeline(churned)
    key = (_won_checksum(), frozenset(churned.items()), str(tz()))
    kept = getattr(_kept, "timeline", None)
    if fresh is True or kept is None or kept[0] != key or (fresh and kept[2] != fresh):
        kept = (key, CustomerTimeline(churned), fresh or None)
        _kept.timeline = kept
    return kept[1]


def job_tag(job_id):
    """``customer_timeline``'s ``fresh`` tag of a fanned-out full recompute."""
    return f"full recompute {job_id}"


def _merge(windows):
    if len(windows) == 1:
        return list(windows)
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
