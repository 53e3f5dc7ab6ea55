"""The deals behind a number: for a KPI, a period and a slice, the deals counted in its
numerator and in its denominator. Reports link every value here; the rows come from the
same family definitions the engine aggregates, so the lists match the numbers.

A list is shown a page at a time, newest first by the moment that counted each deal
(its lead date for a lead count, its first offer for the acceptance rate). A period at
a million deals holds tens of thousands of them, so a page is never found by deriving
every row's moment and sorting: it is read off the index of the column the moment comes
from (``Family.sources``), newest first, stopping as soon as the page is full. Where the
moment is derived (the first offer sent, the exit from a stage), each candidate is then
checked against the family's own definition, in batches, and kept only at the moment
that really counted it.
"""

import functools
import heapq
import operator
import sys
from dataclasses import dataclass, field

from django.db.models import Q

from accounts.access import visible_owner_ids
from funnel.models import Deal
from kpis.definitions import KPIS
from kpis.families import FAMILIES, Family, team_members, within

#: Company-level KPIs whose deals are a family's rows (revenue is the won family).
COMPANY_FAMILIES = {
    "revenue": "won",
    "revenue_growth_pct": "won",
    "avg_deal_size": "won",
    "sales_cycle_days": "won",
    "sales_cycle_days_median": "won",
    "target_attainment_pct": "won",
    "rep_productivity": "won",
    "new_leads_per_rep": "lead",
}

#: Candidates read per query from one source, doubling up to the last figure while a
#: sparse list (one rep, one lost reason) needs more of them to fill a page; candidates
#: checked per query, as many as the share kept so far says the page still needs.
FIRST_BATCH, LAST_BATCH = 200, 12800
#: What a page shows of each deal.
RELATED = ("owner", "company", "channel")


class NoDrillDown(LookupError):
    pass


@dataclass
class Part:
    """The rows of one family behind a list: those of ``period`` that meet ``deal_q``
    (the slice and breakdown: a function of the path from a row to its deal, so that it
    also narrows the rows of a source) and ``also`` (the numerator's own condition)."""

    family: Family
    period: object
    deal_q: object  # prefix -> Q
    also: Q = field(default_factory=Q)

    @property
    def rows(self):
        family = self.family
        return family.in_range(self.period.start_at, self.period.end_at).filter(
            self.deal_q(family.deal_prefix), self.also
        )

    @property
    def checked(self):
        """The same rows at any moment: a candidate is checked by comparing its moment
        with the one its source placed in the period, which already proves the range
        (and is cheaper than a range over a derived moment)."""
        return self.family.base().filter(self.deal_q(self.family.deal_prefix), self.also)

    @property
    def deal_ids(self):
        return self.rows.values("pk" if self.family.model is Deal else "deal_id")


class DealList:
    """The deals of one side of a KPI: the union of its parts' deals."""

    def __init__(self, parts):
        self.parts = parts

    def queryset(self):
        """Every deal of the list, as one ``Deal`` queryset (exports, tests)."""
        if len(self.parts) == 1 and self.parts[0].family.model is Deal:
            return self.parts[0].rows
        return Deal.objects.filter(
            functools.reduce(operator.or_, (Q(pk__in=part.deal_ids) for part in self.parts))
        )

    def page(self, user, offset, limit):
        """Deals ``offset`` to ``offset + limit`` of those ``user`` may see, newest
        first by the moment that counted them (``counted_at`` on each), then by id."""
        visible = _owner_filter(visible_owner_ids(user))
        by_column = self._by_column(visible)
        if by_column is not None:
            return list(_counted_on(by_column[offset : offset + limit]))
        return list(_with_deals(user, self._counted(visible, offset + limit)[offset:]))

    def every(self, user, chunk=2000):
        """Every deal of the list ``user`` may see, in the pages' order (``page``), with
        ``counted_at`` set: the CSV export lists what the pages do, in the same order."""
        visible = _owner_filter(visible_owner_ids(user))
        by_column = self._by_column(visible)
        if by_column is not None:
            yield from _counted_on(by_column.iterator(chunk_size=chunk))
            return
        counted = self._counted(visible, sys.maxsize)
        for i in range(0, len(counted), chunk):
            yield from _with_deals(user, counted[i : i + chunk])

    def _by_column(self, visible):
        """The visible deals newest first, when the moment is an indexed column of the
        deal (one query reads any page); None otherwise."""
        part = self.parts[0]
        if len(self.parts) > 1 or part.family.model is not Deal or not part.family.moment_column:
            return None
        return (
            part.rows.filter(visible(""))
            .select_related(*RELATED)
            .order_by(f"-{part.family.moment_column}", "-pk")
        )

    def _counted(self, visible, wanted):
        """[(deal id, moment)] of the first ``wanted`` deals, newest first."""
        streams = [
            _candidates(index, part, source, visible)
            for index, part in enumerate(self.parts)
            for source in part.family.sources()
        ]
        merged = heapq.merge(*streams, key=operator.itemgetter(0), reverse=True)
        found, seen, size, read = [], set(), min(FIRST_BATCH, 2 * wanted), 0
        while len(found) < wanted:
            batch = [c for _, c in zip(range(size), merged, strict=False)]
            if not batch:
                break
            read += len(batch)
            moments = self._moments(batch)
            for moment, deal_id, key, index, exact in batch:
                if deal_id in seen or not (exact or moments.get((index, key)) == moment):
                    continue
                seen.add(deal_id)
                found.append((deal_id, moment))
            # Enough for the rest of the page at the share kept so far, and a quarter more.
            kept = max(len(found), 1) / read
            size = max(FIRST_BATCH, min(int((wanted - len(found)) * 1.25 / kept), LAST_BATCH))
        return found[:wanted]

    def _moments(self, batch):
        """{(part, row key): moment} of the candidates to check, one query per part."""
        keys = {}
        for _moment, _deal, key, index, exact in batch:
            if not exact:
                keys.setdefault(index, set()).add(key)
        out = {}
        for index, wanted in keys.items():
            for key, moment in (
                self.parts[index].checked.filter(pk__in=wanted).values_list("pk", "_moment")
            ):
                out[(index, key)] = moment
        return out


def _counted_on(deals):
    """Deals read with their family moment (``_moment``), as ``counted_at``."""
    for deal in deals:
        deal.counted_at = deal._moment
        yield deal


def _with_deals(user, counted):
    """The deals of ``counted`` ([(deal id, moment)]) that ``user`` may see, in that
    order, with ``counted_at`` set: one query."""
    by_pk = Deal.objects.visible_to(user).select_related(*RELATED).in_bulk([d for d, _ in counted])
    for pk, moment in counted:
        if pk in by_pk:
            by_pk[pk].counted_at = moment
            yield by_pk[pk]


def _candidates(index, part, source, visible):
    """(moment, deal id, family row key, part index, exact) of ``source``'s rows in the
    period whose deals are ``visible`` (prefix -> condition), newest first. ``exact``:
    the row is the family's own, placed by this very column, so it needs no check."""
    family = part.family
    prefix = source.deal_prefix
    exact = source.model is family.model and source.path in (family.moment_column, "_moment")
    if exact:
        rows = part.rows
    else:
        rows = source.model.objects.filter(
            within(source.path, part.period.start_at, part.period.end_at),
            part.deal_q(prefix),
            **dict(source.conditions),
        )
    rows = rows.filter(visible(prefix))
    deal = "pk" if source.model is Deal else "deal_id"
    key = "pk" if source.model is family.model else "deal_id"
    path, last, size = source.path, None, FIRST_BATCH
    while True:
        # After the last row read: an index range (``path <= moment``), then the tie.
        page = (
            rows
            if last is None
            else rows.filter(
                Q(**{f"{path}__lte": last[0]}),
                Q(**{f"{path}__lt": last[0]}) | Q(pk__lt=last[1]),
            )
        )
        batch = list(page.order_by(f"-{path}", "-pk").values_list(path, "pk", deal, key)[:size])
        for moment, _pk, deal_id, row_key in batch:
            yield moment, deal_id, row_key, index, exact
        if len(batch) < size:
            return
        last = batch[-1][:2]
        size = min(size * 2, LAST_BATCH)


def _owner_filter(owners):
    """prefix -> the condition that a row's deal is owned by one of ``owners`` (None:
    anyone), for deals (``""``) and for rows reaching them (``"deal__"``)."""

    def visible(prefix):
        return Q() if owners is None else Q(**{f"{prefix}owner_id__in": owners})

    return visible


def deals_behind(code, period, slice_key="company", breakdown=""):
    """(numerator deals, denominator deals or None) as ``DealList``s. The caller reads
    them through ``page(user, ...)`` or narrows ``queryset()`` with ``visible_to``."""
    kpi = KPIS[code]
    family_name = kpi.family or COMPANY_FAMILIES.get(code)
    if family_name is None:
        raise NoDrillDown(f"{code} is not computed from a list of deals")
    family = FAMILIES[family_name]
    slice_type, _, slice_value = slice_key.partition(":")
    slice_type = None if slice_type == "company" else slice_type
    slice_value = _slice_value(slice_type, slice_value)
    breakdown_type, _, breakdown_value = breakdown.partition(":")
    breakdown_type, breakdown_value = breakdown_type or None, breakdown_value or None
    deal_q = _deal_q(family, slice_type, slice_value, breakdown_type, breakdown_value)
    numerator = DealList([Part(family, period, deal_q, kpi.numerator_rows or Q())])
    denominator = None
    if kpi.computed_by == "outcomes":
        # Win rate: won opportunities over won and lost opportunities of the period.
        lost = FAMILIES["lost"]
        denominator = DealList(
            [
                Part(family, period, deal_q),
                Part(
                    lost,
                    period,
                    _deal_q(lost, slice_type, slice_value, None, None),
                    Q(entered_needs_at__isnull=False),
                ),
            ]
        )
    elif kpi.denominator:
        denominator = DealList([Part(family, period, deal_q)])
    return numerator, denominator


def _deal_q(family, slice_type, slice_value, breakdown_type, breakdown_value):
    if slice_type == "team":
        slice_value = team_members(slice_value)  # listed once, for every query of the list

    def deal_q(prefix):
        q = Q()
        if slice_type:
            q &= family.slice_q(slice_type, slice_value, prefix)
        if breakdown_type:
            q &= Q(**{family.breakdown_field(breakdown_type, prefix): breakdown_value})
        return q

    return deal_q


def _slice_value(slice_type, value):
    if slice_type in ("team", "rep", "channel"):
        return int(value)
    return value or None
