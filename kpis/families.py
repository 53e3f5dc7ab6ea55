"""KPI families: the populations the KPIs count, and their additive measures.

A family is a set of rows (deals, offers or activities) keyed by one moment (the
family's *date*: lead creation, needs entry, an offer's sending...). Each family runs as
one aggregate query per slice type, grouped by period bucket and slice value
(``GROUP BY trunc(date), slice``), computing all of its measures at once. KPIs
(kpis/definitions.py) are ratios, means or sums of these measures. The same family also
answers "which deals are behind this number" (``Family.rows``).

docs/kpis.md states every definition; the comments here only say how it maps to SQL.
"""

import datetime
import functools
import operator
import threading
from dataclasses import dataclass, field

from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import (
    BigIntegerField,
    BooleanField,
    Case,
    Count,
    DateField,
    DateTimeField,
    DurationField,
    Exists,
    Expression,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest, Trunc, TruncDate

from accounts.models import User
from funnel import stages
from funnel.models import Activity, ActivityKind, Deal, DocumentType, Offer, OfferStatus
from funnel.stages import Stage, Status
from kpis.periods import Grain, tz

NEEDS_ACTIVITY_KINDS = (ActivityKind.MEETING, ActivityKind.AUDIT, ActivityKind.CALL)

#: Slice type -> the deal field it groups by. ``company`` groups by nothing.
SLICE_FIELDS = {
    "team": "owner__team_id",
    "rep": "owner_id",
    "channel": "channel_id",
    "segment": "segment",
    "industry": "industry",
}

#: The columns a family groups by; slices are rolled up from them (team via owner).
GROUP_FIELDS = {
    "owner": "owner_id",
    "channel": "channel_id",
    "segment": "segment",
    "industry": "industry",
}

#: Breakdown type -> the deal field it groups by (inside any slice).
BREAKDOWN_FIELDS = {
    "source": "heard_from",
    "prompt": "contact_prompt",
    "scope": "product_scope",
    "industry": "industry",
    "segment": "segment",
    "reason": "lost_reason__code",
    "stage": "lost_stage",
}


def duration(end, start):
    return ExpressionWrapper(F(end) - F(start), output_field=DurationField())


def skipped_q(stage, prefix=""):
    """The deal passed ``stage`` by a skip: its stamp equals the next stage's."""
    nxt = stages.following(stage)
    if nxt is None or stage == Stage.LEAD:
        return Q(pk__in=[])
    return Q(**{f"{prefix}{stages.stamp_field(stage)}": F(f"{prefix}{stages.stamp_field(nxt)}")})


def stay_exit(stage):
    """When a deal left ``stage``: the next stamp, the loss at that stage, or (for
    closing) the win."""
    nxt = stages.following(stage)
    lost = When(lost_stage=stage, then=F("lost_at"))
    if nxt is None:
        return Case(When(status=Status.WON, then=F("won_at")), lost, output_field=DateTimeField())
    return Coalesce(
        F(stages.stamp_field(nxt)),
        Case(lost, output_field=DateTimeField()),
        output_field=DateTimeField(),
    )


#: The longest range a family's ``narrow`` condition is used for: the days, weeks and
#: months an incremental recompute takes. Over a quarter or a year, PostgreSQL scans the
#: rows once faster than it looks up the range's rows by index (measured at 100,000
#: deals: the year's first-offer query took 4.9 s narrowed, 1.2 s scanned).
NARROW_SPAN = datetime.timedelta(days=62)


def within(path, start_at, end_at):
    """``path`` falls in [start_at, end_at)."""
    return Q(**{f"{path}__gte": start_at, f"{path}__lt": end_at})


#: A narrowing condition is handed to the family's query as the list of its rows' ids
#: when there are at most this many: PostgreSQL then plans the query for the rows it
#: really has. Left as a subquery (or an OR across two tables), it guessed a few rows
#: and repeated every derived moment once per user of the joined team column (at 1M
#: deals, a 4-day first-offer query took 0.7 s), or scanned both tables.
#: SQLite binds each listed id as a parameter (at most 32,766 in a statement).
NARROW_IDS_MAX = 50_000
NARROW_IDS_MAX_SQLITE = 5_000


def _listed(querysets):
    """The distinct rows (ids, or (id, deal id) pairs) of ``querysets``, sorted, or
    None when there are more than the database takes listed (``NARROW_IDS_MAX``)."""
    most = NARROW_IDS_MAX
    if connection.vendor != "postgresql":
        most = min(most, NARROW_IDS_MAX_SQLITE)
    ids = set()
    for qs in querysets:
        ids.update(qs.order_by()[: most + 1])
        if len(ids) > most:
            return None
    return sorted(ids)


class Among(Expression):
    """``column = ANY(%s)``: one array parameter for a listed set of ids, where
    ``column IN (%s, %s, ...)`` sends thousands of parameters (the client splits and
    quotes each; PostgreSQL parses and plans each). PostgreSQL only; ``among`` picks."""

    conditional = True
    output_field = BooleanField()

    def __init__(self, column, ids):
        super().__init__()
        self.column = F(column) if isinstance(column, str) else column
        self.ids = list(ids)

    def get_source_expressions(self):
        return [self.column]

    def set_source_expressions(self, exprs):
        (self.column,) = exprs

    def as_sql(self, compiler, connection):
        sql, params = compiler.compile(self.column)
        return f"{sql} = ANY(%s)", (*params, self.ids)


#: The placeholder id a prepared query is compiled with (``Prepared``).
PREPARED_IDS = -7_340_033

_prepared = threading.local()


class Prepared:
    """A values() queryset compiled once whose one ``Among`` array of ids is replaced
    at each run: its SQL, its parameters and its compiler, whose converters turn the
    fetched rows into what iterating the queryset gives (dicts by name)."""

    def __init__(self, queryset):
        query = queryset.query
        self.compiler = query.get_compiler(queryset.db)
        self.sql, params = self.compiler.as_sql()
        self.params = list(params)
        (self.slot,) = [i for i, p in enumerate(self.params) if p == [PREPARED_IDS]]
        self.names = [*query.extra_select, *query.values_select, *query.annotation_select]

    def params_for(self, ids):
        params = list(self.params)
        params[self.slot] = list(ids)
        return params

    def rows(self, fetched):
        names = self.names
        for row in self.compiler.results_iter(results=[fetched]):
            yield dict(zip(names, row, strict=True))


def run_prepared(prepared, ids):
    """The rows of each of the ``prepared`` queries for ``ids``, in one round trip:
    the statements sent together (Django binds parameters on the client, so the
    server runs them as one simple query) and their results read in turn."""
    if not prepared:
        return []
    sql = ";\n".join(p.sql for p in prepared)
    params = [value for p in prepared for value in p.params_for(ids)]
    out = []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for i, p in enumerate(prepared):
            if i:
                cursor.nextset()
            out.append(list(p.rows(cursor.fetchall())))
    return out


def among(column, ids):
    """The rows whose ``column`` is one of ``ids`` (a list)."""
    if connection.vendor == "postgresql":
        return Among(column, ids)
    return Q(**{f"{column}__in": ids})


def team_members(team_id):
    """The ids of a team's members, listed: ``owner_id IN (1, 2, 3)`` is a condition
    PostgreSQL estimates well, where a join through the few rows of the user table is
    guessed at one row and a drill-down then hashes every deal of the team instead of
    reading a page off an index."""
    return list(User.objects.filter(team_id=team_id).values_list("pk", flat=True))


@dataclass(frozen=True)
class Source:
    """Rows of ``model`` whose ``path`` moment may be a family row's moment: where a
    drill-down reads candidates newest first, off the index on ``path``."""

    model: type
    path: str
    conditions: tuple = ()  # (lookup, value) pairs

    @property
    def deal_prefix(self):
        return "" if self.model is Deal else "deal__"


class any_within:
    """A ``Family.narrow``: one of ``paths`` falls in the range (a moment derived by
    COALESCE or CASE from these columns is one of them)."""

    def __init__(self, *paths):
        self.paths = paths

    def __call__(self, start_at, end_at):
        return functools.reduce(operator.or_, (within(p, start_at, end_at) for p in self.paths))

    def ids(self, model, start_at, end_at):
        """The ids of ``model`` rows meeting the condition (None: too many, or not worth
        it), one indexed range per path; for rows of a deal (offers), (id, deal id)
        pairs. Columns of the model's own table are left as they are: PostgreSQL ORs
        their index ranges well, and a long list only costs it more."""
        if not any("__" in p for p in self.paths):
            return None
        fields = ["pk"] if model is Deal else ["pk", "deal_id"]
        return _listed(
            model.objects.filter(within(p, start_at, end_at)).values_list(
                *fields, flat=model is Deal
            )
            for p in self.paths
        )

    def sources(self, family):
        return [Source(family.model, path) for path in self.paths]


class has_row_within:
    """A ``Family.narrow`` for a deal keyed by the first of its rows of ``model``: its
    first such row falls in the range, that is, it has one in the range and none
    before. (A deal with rows before the range is left out by index lookups here,
    instead of by deriving its first moment: at 1M deals, two days' activities belong
    to 10,000 deals, 400 of them first ones.)"""

    def __init__(self, model, path, **conditions):
        self.model, self.path, self.conditions = model, path, conditions

    def _rows(self, start_at, end_at):
        earlier = self.model.objects.filter(
            deal_id=OuterRef("deal_id"), **{f"{self.path}__lt": start_at}, **self.conditions
        )
        return self.model.objects.filter(
            within(self.path, start_at, end_at), ~Exists(earlier), **self.conditions
        )

    def __call__(self, start_at, end_at):
        return Q(pk__in=self._rows(start_at, end_at).values("deal_id"))

    def ids(self, model, start_at, end_at):
        return _listed([self._rows(start_at, end_at).values_list("deal_id", flat=True).distinct()])

    def sources(self, family):
        return [Source(self.model, self.path, tuple(self.conditions.items()))]


def first_sent_offer(column):
    return Subquery(
        Offer.objects.filter(deal=OuterRef("pk"), sent_at__isnull=False)
        .order_by("sent_at", "version")
        .values(column)[:1]
    )


def first_needs_activity():
    return Subquery(
        Activity.objects.filter(deal=OuterRef("pk"), kind__in=NEEDS_ACTIVITY_KINDS)
        .order_by("held_at")
        .values("held_at")[:1]
    )


def versions_sent_by(moment_field):
    return Subquery(
        Offer.objects.filter(
            deal=OuterRef("pk"), sent_at__isnull=False, sent_at__lte=OuterRef(moment_field)
        )
        .order_by()
        .values("deal")
        .annotate(n=Count("pk"))
        .values("n")
    )


def rounds_count():
    from funnel.models import NegotiationRound

    return Subquery(
        NegotiationRound.objects.filter(deal=OuterRef("pk"))
        .order_by()
        .values("deal")
        .annotate(n=Count("pk"))
        .values("n")
    )


@dataclass
class Family:
    """One population keyed by one moment, with its measures."""

    name: str
    model: type
    date: object  # field name or expression: the moment that places a row in a period
    measures: dict  # measure name -> aggregate expression
    where: Q = field(default_factory=Q)
    annotations: dict = field(default_factory=dict)
    deal_prefix: str = ""  # "deal__" when the rows are offers or activities
    breakdowns: tuple = ()
    # measure name -> value expression, for medians (computed from the values)
    medians: dict = field(default_factory=dict)
    # When the moment is derived (a subquery, a COALESCE), a function of the range
    # returning a condition on indexed columns that every row of the range satisfies:
    # the database finds a short range's rows by index instead of deriving every row's
    # moment (``NARROW_SPAN``). It only narrows; the moment itself still decides.
    narrow: object = None
    # The moment is a local date (a DateField, not a timestamp): bucketed as it is.
    local_date: bool = False

    def base(self):
        qs = self.model.objects.all()
        if self.annotations:
            qs = qs.annotate(**self.annotations)
        date = F(self.date) if isinstance(self.date, str) else self.date
        return qs.annotate(_moment=date).filter(self.where, _moment__isnull=False)

    def in_range(self, start_at, end_at):
        qs = self.base().filter(_moment__gte=start_at, _moment__lt=end_at)
        if self.narrow is not None and end_at - start_at <= NARROW_SPAN:
            ids = self.narrow.ids(self.model, start_at, end_at)
            if ids is None:
                qs = qs.filter(self.narrow(start_at, end_at))
            elif not ids:
                qs = qs.none()
            elif self.model is Deal:
                qs = qs.filter(among("pk", ids))
            else:
                # Their deals listed too: PostgreSQL looks them up by key instead of
                # hashing every deal to join a few thousand rows.
                qs = qs.filter(
                    among("pk", [i for i, _ in ids]), among("deal_id", sorted({d for _, d in ids}))
                )
        return qs

    def slice_q(self, slice_type, value, prefix):
        """The rows of one slice, reached from rows whose path to the deal is
        ``prefix``. A team is its members' deals: ``value`` lists their ids
        (``team_members``)."""
        if slice_type == "team":
            return Q(**{f"{prefix}owner_id__in": value})
        return Q(**{prefix + SLICE_FIELDS[slice_type]: value})

    def breakdown_field(self, breakdown_type, prefix=None):
        return (self.deal_prefix if prefix is None else prefix) + BREAKDOWN_FIELDS[breakdown_type]

    @property
    def moment_column(self):
        """The column of the family's model that is its moment, or None when derived."""
        if isinstance(self.date, str) and self.date not in self.annotations:
            return self.date
        return None

    def sources(self):
        """Where a drill-down finds this family's rows newest first: its own moment
        column, or the columns (or related rows) its derived moment is taken from; with
        neither, the moment itself (``_moment``: every row of the period, sorted)."""
        if self.moment_column:
            return [Source(self.model, self.moment_column)]
        if self.narrow is not None:
            return self.narrow.sources(self)
        return [Source(self.model, "_moment")]

    def bucket(self, grain):
        if self.local_date:
            # A date is its own day; ranges compare as local dates (Django turns an
            # aware bound into its local date for a DateField).
            if grain == Grain.DAY:
                return F("_moment")
            return Trunc("_moment", grain, output_field=DateField())
        return Trunc("_moment", grain, output_field=DateField(), tzinfo=tz())

    def _grouped(self, grain, start_at, end_at, breakdown_type=None, rows=None):
        """The rows of the range (or ``rows``, a queryset of ``base``) with their period
        bucket and every slice column."""
        qs = (self.in_range(start_at, end_at) if rows is None else rows).annotate(
            _bucket=self.bucket(grain),
            **{f"_{name}": F(self.deal_prefix + path) for name, path in GROUP_FIELDS.items()},
        )
        columns = ["_bucket", *(f"_{name}" for name in GROUP_FIELDS)]
        if breakdown_type:
            qs = group_by(qs, "_breakdown", self.breakdown_field(breakdown_type))
            columns.append("_breakdown")
        return qs, columns

    def aggregate(self, grain, start_at, end_at, breakdown_type=None):
        """One query: the measures grouped by period bucket and every slice column
        (owner, channel, segment, industry[, breakdown]); kpis.compute rolls the rows up
        into the slices (a team is its members' owners)."""
        qs, columns = self._grouped(grain, start_at, end_at, breakdown_type)
        return qs.order_by().values(*columns).annotate(**self.measures)

    def of_deals(self, deal_ids, breakdown_type=None, by_deal=False):
        """What the deals ``deal_ids`` alone add to the day ledger: the measures of their
        rows, whatever their moment, grouped as ``aggregate`` groups them at day grain
        (``by_deal``: and by deal, in a ``_deal`` column). One query, read through the
        deal key's index."""
        column = "pk" if self.model is Deal else "deal_id"
        rows = self.base().filter(among(column, sorted(deal_ids)))
        qs, columns = self._grouped(Grain.DAY, None, None, breakdown_type, rows=rows)
        if by_deal:
            qs = qs.annotate(_deal=F(column))
            columns = [*columns, "_deal"]
        return qs.order_by().values(*columns).annotate(**self.measures)

    def of_deals_prepared(self, breakdown_type=None, by_deal=False):
        """PostgreSQL: ``of_deals``'s query compiled once per thread (``Prepared``), for
        the deal ids of each change: building a query through the ORM costs more than
        PostgreSQL takes to run it through the deal key's index."""
        # Per thread, whose connection object Django keeps across reconnections.
        key = (self.name, breakdown_type, by_deal)
        cache = _prepared.__dict__.setdefault("queries", {})
        if key not in cache:
            cache[key] = Prepared(self.of_deals([PREPARED_IDS], breakdown_type, by_deal))
        return cache[key]

    def _sliced(self, grain, start_at, end_at, members):
        """The rows of the range with their period bucket and one column per slice type
        (``ROLLUP_FIELDS``, the team by ``team_of``), and those columns' names."""
        qs = self.in_range(start_at, end_at).annotate(
            _bucket=self.bucket(grain), **slice_columns(self.deal_prefix, members)
        )
        return qs, ["_bucket", *SLICE_NAMES]

    def _rollup_input(
        self, grain, start_at, end_at, members, columns=None, medians=None, sums=True
    ):
        """(inner SQL, params, sum input names) of a roll-up: the rows of the range with
        their bucket, slice columns, ``columns`` ({alias: expression}), each measure's
        per-row input (with ``sums``) and ``medians``' values; None when no row can be
        in the range."""
        qs, names = self._sliced(grain, start_at, end_at, members)
        columns = columns or {}
        inputs = {}
        if sums:
            inputs = {f"_m_{name}": row_expression(agg) for name, agg in self.measures.items()}
        qs = qs.annotate(**columns, **inputs, **(medians or {}))
        qs = qs.order_by().values(*names, *columns, *inputs, *(medians or {}))
        try:
            inner, params = qs.query.sql_with_params()
        except EmptyResultSet:  # no row can be in the range (``Family.in_range``)
            return None
        return inner, params, list(inputs)

    def rolled_up(self, grain, start_at, end_at, members=None):
        """PostgreSQL: one query rolling the measures up into every slice at once
        (``GROUPING SETS``), medians included (``percentile_cont``); ``members``: the
        users' teams (``team_members_of_all``), read once for a whole gather. Yields
        (bucket, slice key, {measure: value}, {median measure: value})."""
        medians = {f"_d_{n}": e for n, e in self.medians.items()}
        query = self._rollup_input(grain, start_at, end_at, members, medians=medians)
        if query is None:
            return
        inner, params, inputs = query
        aggregates = [
            *(f'SUM("{name}")' for name in inputs),
            *(f'percentile_cont(0.5) WITHIN GROUP (ORDER BY "{name}")' for name in medians),
        ]
        measure_names, median_names = list(self.measures), list(self.medians)
        for bucket, key, rest in rolled_up_rows(inner, params, '"_bucket"', aggregates):
            sums = dict(zip(measure_names, rest[: len(measure_names)], strict=True))
            meds = dict(zip(median_names, rest[len(measure_names) :], strict=True))
            yield local_bucket(bucket), key, sums, meds

    def rolled_up_breakdowns(self, grain, start_at, end_at, breakdown_types, members=None):
        """PostgreSQL: the measures by each of ``breakdown_types`` rolled up into every
        slice, in one query (a grouping set per breakdown type and slice type) instead
        of one per breakdown type: the rows are read once. A row without a value of a
        breakdown (no source given) is in none of its groups, as ``group_by`` leaves it
        out. Yields (bucket, slice key, breakdown type, breakdown value, {measure:
        value})."""
        names = [f"_b_{t}" for t in breakdown_types]
        columns = {
            n: F(self.breakdown_field(t)) for n, t in zip(names, breakdown_types, strict=True)
        }
        query = self._rollup_input(grain, start_at, end_at, members, columns=columns)
        if query is None:
            return
        inner, params, inputs = query
        breakdowns = [f'"{name}"' for name in names]
        select = [
            '"_bucket"',
            *_with_flags(SLICE_COLUMNS),
            *_with_flags(breakdowns),
            *(f'SUM("{name}")' for name in inputs),
        ]
        n, b = len(SLICE_COLUMNS), len(breakdowns)
        measure_names = list(self.measures)
        sets = _with_slices(breakdowns)
        for row in _grouped_rows(inner, params, select, sets, '"_bucket", '):
            key = _slice_key(row[1 : 1 + n], row[1 + n : 1 + 2 * n])
            start = 1 + 2 * n
            values, grouping = row[start : start + b], row[start + b : start + 2 * b]
            which = grouping.index(0)
            value = values[which]
            if key is None or value is None or value == "":
                continue
            sums = dict(zip(measure_names, row[start + 2 * b :], strict=True))
            yield local_bucket(row[0]), key, breakdown_types[which], value, sums

    def medians_by_grains(self, grains, start_at, end_at, members=None):
        """PostgreSQL: the medians of every slice of every period of each of ``grains``
        over the range, in one query (a grouping set per grain and slice type): the
        rows are read once for all the grains instead of once per grain. Yields
        (grain, bucket, slice key, {median measure: value})."""
        if not self.medians:
            return
        buckets = {f"_g_{grain}": self.bucket(grain) for grain in grains}
        medians = {f"_d_{n}": e for n, e in self.medians.items()}
        query = self._rollup_input(
            grains[0], start_at, end_at, members, columns=buckets, medians=medians, sums=False
        )
        if query is None:
            return
        inner, params, _ = query
        bucket_columns = [f'"{name}"' for name in buckets]
        select = [
            *_with_flags(bucket_columns),
            *_with_flags(SLICE_COLUMNS),
            *(f'percentile_cont(0.5) WITHIN GROUP (ORDER BY "{name}")' for name in medians),
        ]
        g, n = len(grains), len(SLICE_COLUMNS)
        names = list(self.medians)
        for row in _grouped_rows(inner, params, select, _with_slices(bucket_columns)):
            which = row[g : 2 * g].index(0)
            key = _slice_key(row[2 * g : 2 * g + n], row[2 * g + n : 2 * g + 2 * n])
            if key is None:
                continue
            values = dict(zip(names, row[2 * g + 2 * n :], strict=True))
            yield grains[which], local_bucket(row[which]), key, values

    def slice_medians(self, grain, start_at, end_at, slices, members=None):
        """PostgreSQL: the medians of the rows of ``slices`` (slice keys) only, by period
        bucket, in one scan: each slice's median an aggregate over its own rows
        (``FILTER``). ``rolled_up`` sorts every row once per slice type instead, which a
        change of one deal (six slices) does not need. Yields (bucket, slice key,
        {median measure: value})."""
        if not self.medians or not slices:
            return
        qs, columns = self._sliced(grain, start_at, end_at, members)
        medians = {f"_d_{n}": e for n, e in self.medians.items()}
        qs = qs.annotate(**medians).order_by().values(*columns, *medians)
        try:
            inner, params = qs.query.sql_with_params()
        except EmptyResultSet:  # no row can be in the range (``Family.in_range``)
            return
        slices = sorted(slices)
        select, select_params = [], []
        for key in slices:
            condition, value = "", []
            if key != "company":
                slice_type, raw = key.split(":", 1)
                condition = f' FILTER (WHERE "_s_{slice_type}" = %s)'
                value = [raw if slice_type in ("segment", "industry") else int(raw)]
            for name in medians:
                select.append(f'percentile_cont(0.5) WITHIN GROUP (ORDER BY "{name}"){condition}')
                select_params += value
        sql = f'SELECT "_bucket", {", ".join(select)} FROM ({inner}) AS family GROUP BY "_bucket"'
        names = list(self.medians)
        with connection.cursor() as cursor:
            cursor.execute(sql, (*select_params, *params))
            for bucket, *values in cursor:
                bucket = local_bucket(bucket)
                for i, key in enumerate(slices):
                    part = values[i * len(names) : (i + 1) * len(names)]
                    yield bucket, key, dict(zip(names, part, strict=True))

    def median_values(self, grain, start_at, end_at):
        """Each row's value of each median measure, with its bucket and slice columns."""
        if not self.medians:
            return []
        qs, columns = self._grouped(grain, start_at, end_at)
        qs = qs.annotate(**{f"_m_{name}": expr for name, expr in self.medians.items()})
        return qs.order_by().values(*columns, *(f"_m_{name}" for name in self.medians))


def slice_columns(prefix="", members=None):
    """{alias: expression} of every slice type's column (``SLICE_NAMES``) of rows whose
    deal is at ``prefix``: the team by ``team_of`` (``members``)."""
    columns = {f"_s_{t}": F(prefix + path) for t, path in ROLLUP_FIELDS.items() if path}
    columns["_s_team"] = team_of(prefix + "owner_id", members)
    return {name: columns[name] for name in SLICE_NAMES}


def rolled_up_rows(inner, params, leading, aggregates):
    """PostgreSQL: the rows of the query ``inner`` (with the ``slice_columns``) grouped
    by the ``leading`` column and each slice column, and by the leading column alone
    (the company), in one read (``GROUPING SETS``). Yields (leading value, slice key,
    [the ``aggregates``' values]); a row without a value of its slice is left out."""
    select = [leading, *_with_flags(SLICE_COLUMNS), *aggregates]
    n = len(SLICE_COLUMNS)
    for row in _grouped_rows(inner, params, select, _with_slices(), f"{leading}, "):
        key = _slice_key(row[1 : 1 + n], row[1 + n : 1 + 2 * n])
        if key is not None:
            yield row[0], key, row[1 + 2 * n :]


def _grouped_rows(inner, params, select, grouping_sets, leading=""):
    """The rows of ``SELECT select FROM (inner) GROUP BY leading GROUPING SETS (...)``:
    one read of a roll-up's input for all its groupings."""
    sql = (
        f"SELECT {', '.join(select)} FROM ({inner}) AS family "
        f"GROUP BY {leading}GROUPING SETS ({grouping_sets})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        yield from cursor


def _with_flags(columns):
    """Select items: ``columns``, then the ``GROUPING()`` flag of each (0 where a row
    groups by it), which tells a grouping set's rows from another's."""
    return [*columns, *(f"GROUPING({c})" for c in columns)]


def _with_slices(leading=("",)):
    """Grouping sets: each of the ``leading`` columns ("": none) alone and with each
    slice column."""
    return ", ".join(
        "(" + ", ".join(c for c in (lead, s) if c) + ")"
        for lead in leading
        for s in ("", *SLICE_COLUMNS)
    )


def _slice_key(values, grouping):
    """The slice of a rolled-up row from its slice columns and their ``GROUPING()``
    flags: "company" when none is grouped; None for a slice without a value."""
    for i, flag in enumerate(grouping):
        if flag == 0:
            value = values[i]
            return None if value is None or value == "" else f"{ROLLUP_SLICES[i]}:{value}"
    return "company"


def local_bucket(bucket):
    """A period bucket read from the database as a local date."""
    if isinstance(bucket, datetime.datetime):
        # The truncated local timestamp (Django converts it in Python).
        if bucket.tzinfo is not None:
            bucket = bucket.astimezone(tz())
        bucket = bucket.date()
    return bucket


#: The slices a PostgreSQL roll-up groups by (``Family.rolled_up``); the team is the
#: owner's current team, like the Python roll-up (``team_of``).
ROLLUP_FIELDS = {
    "rep": "owner_id",
    "team": None,
    "channel": "channel_id",
    "segment": "segment",
    "industry": "industry",
}
ROLLUP_SLICES = list(ROLLUP_FIELDS)
SLICE_NAMES = [f"_s_{t}" for t in ROLLUP_FIELDS]
SLICE_COLUMNS = [f'"{name}"' for name in SLICE_NAMES]


#: Up to this many users in teams, ``team_of`` lists them in a CASE (each row tests
#: them in turn); with more, the user table is joined.
TEAM_CASE_MAX = 200


def team_members_of_all():
    """[(user id, team id)] of the users in a team, up to ``TEAM_CASE_MAX`` + 1."""
    return list(
        User.objects.filter(team_id__isnull=False)
        .order_by("pk")
        .values_list("pk", "team_id")[: TEAM_CASE_MAX + 1]
    )


def team_of(owner_path, members=None):
    """The owner's current team as an expression over the owner column: the users'
    teams (``members``, read now if not given) listed in a CASE. A join to the user
    table instead (a few rows, which PostgreSQL guesses badly) led it to pair every
    candidate row with every user before looking the deal up, or to hash all deals."""
    if members is None:
        members = team_members_of_all()
    if len(members) > TEAM_CASE_MAX:
        return F(owner_path.removesuffix("_id") + "__team_id")
    whens = [When(**{owner_path: pk}, then=Value(team)) for pk, team in members]
    return Case(*whens, default=Value(None), output_field=BigIntegerField())


def row_expression(aggregate):
    """The per-row input of a family measure, summed by the roll-up: Count(pk,
    filter=q) counts the rows where q holds; Sum(e, filter=q) adds e where q holds."""
    source = aggregate.source_expressions[0]
    condition = aggregate.filter
    if isinstance(aggregate, Count):
        if condition is None:
            return Value(1)
        return Case(When(condition, then=Value(1)), default=Value(0))
    if condition is None:
        return source
    return Case(When(condition, then=source), default=None)


def group_by(qs, alias, field_path):
    """Annotate the grouping column; rows without a value belong to no slice."""
    qs = qs.annotate(**{alias: F(field_path)}).exclude(**{f"{alias}__isnull": True})
    if not field_path.endswith("_id"):
        qs = qs.exclude(**{alias: ""})
    return qs


def _count(q=None):
    return Count("pk", filter=q) if q is not None else Count("pk")


def _sum(expr, q=None):
    return Sum(expr, filter=q) if q is not None else Sum(expr)


def pipeline_measure(stage):
    """The ``pipeline`` family's measure of the open value in ``stage``."""
    return f"value_{stage}"


WON = Q(status=Status.WON)
OPEN = Q(status=Status.OPEN)
OPPORTUNITY = Q(entered_needs_at__isnull=False)


def _stage_families():
    """Per stage: the cohort that reached it (conversion, drop-off, skips) and the stays
    that ended (time in stage)."""
    out = {}
    for stage in stages.ORDER:
        stamp = stages.stamp_field(stage)
        nxt = stages.following(stage)
        reached_next = Q(**{f"{stages.stamp_field(nxt)}__isnull": False}) if nxt else WON
        out[f"reached_{stage}"] = Family(
            name=f"reached_{stage}",
            model=Deal,
            date=stamp,
            measures={
                "n": _count(),
                "next": _count(reached_next),
                "lost_here": _count(Q(status=Status.LOST, lost_stage=stage)),
                "skipped": _count(skipped_q(stage)),
                "open": _count(OPEN),
            },
        )
        stay = duration("_exit", stamp)
        out[f"stay_{stage}"] = Family(
            name=f"stay_{stage}",
            model=Deal,
            date="_exit",
            annotations={"_exit": stay_exit(stage)},
            narrow=any_within(stages.stamp_field(nxt) if nxt else "won_at", "lost_at"),
            where=Q(**{f"{stamp}__isnull": False}) & ~skipped_q(stage),
            measures={"n": _count(), "days": _sum(stay)},
            medians={"days": stay},
        )
    return out


FAMILIES = {
    # Stage 1 and the lead cohort (stage 2 quality, stage 6 sales conversion, ROI).
    "lead": Family(
        name="lead",
        model=Deal,
        date="entered_lead_at",
        measures={
            "n": _count(),
            "touch_n": _count(Q(first_touch_at__isnull=False)),
            "touch_days": _sum(duration("entered_lead_at", "first_touch_at")),
            "qualified": _count(OPPORTUNITY),
            "won": _count(WON),
            "won_value": _sum("current_value_base", WON),
            "open": _count(OPEN),
        },
        breakdowns=("source", "prompt", "scope", "industry", "segment"),
    ),
    # Entering needs: qualified leads, time to qualify, pipeline created, the
    # opportunity cohort.
    "needs": Family(
        name="needs",
        model=Deal,
        date="entered_needs_at",
        measures={
            "n": _count(),
            "qualify_days": _sum(duration("entered_needs_at", "entered_lead_at")),
            "pipeline": _sum("current_value_base"),
            "won": _count(WON),
            "open": _count(OPEN),
        },
    ),
    "needs_activity": Family(
        name="needs_activity",
        model=Activity,
        date="held_at",
        deal_prefix="deal__",
        measures={
            "n": _count(Q(kind__in=NEEDS_ACTIVITY_KINDS)),
            "calls": _count(Q(kind=ActivityKind.CALL)),
            "emails": _count(Q(kind=ActivityKind.EMAIL)),
            "meetings": _count(Q(kind__in=(ActivityKind.MEETING, ActivityKind.AUDIT))),
        },
    ),
    "first_activity": Family(
        name="first_activity",
        model=Deal,
        date="_first_activity",
        annotations={"_first_activity": first_needs_activity()},
        narrow=has_row_within(Activity, "held_at", kind__in=NEEDS_ACTIVITY_KINDS),
        measures={
            "n": _count(),
            "offer": _count(Q(entered_offer_at__isnull=False)),
            "open": _count(OPEN),
        },
    ),
    "offer_sent": Family(
        name="offer_sent",
        model=Offer,
        date="sent_at",
        deal_prefix="deal__",
        where=~skipped_q(Stage.OFFER, prefix="deal__"),
        measures={"n": _count(), "prep_days": _sum(duration("sent_at", "prep_started_at"))},
    ),
    "first_offer": Family(
        name="first_offer",
        model=Deal,
        date="_first_sent_at",
        annotations={
            "_first_sent_at": first_sent_offer("sent_at"),
            "_first_value": first_sent_offer("value_base"),
            "_accepted": Exists(
                Offer.objects.filter(deal=OuterRef("pk"), status=OfferStatus.ACCEPTED)
            ),
            "_latest_status": Subquery(
                Offer.objects.filter(deal=OuterRef("pk"), sent_at__isnull=False)
                .order_by("-sent_at", "-version")
                .values("status")[:1]
            ),
        },
        where=~skipped_q(Stage.OFFER),
        narrow=has_row_within(Offer, "sent_at"),
        measures={
            "n": _count(),
            "accepted": _count(Q(_accepted=True)),
            "pending": _count(OPEN & Q(_accepted=False, _latest_status=OfferStatus.SENT)),
            "value": _sum("_first_value"),
            "open": _count(OPEN),
        },
    ),
    "left_offer": Family(
        name="left_offer",
        model=Deal,
        date="_left_offer",
        annotations={
            "_left_offer": Coalesce(
                F("entered_negotiation_at"),
                Case(When(lost_stage=Stage.OFFER, then=F("lost_at")), output_field=DateTimeField()),
                output_field=DateTimeField(),
            ),
        },
        where=Q(entered_offer_at__isnull=False) & ~skipped_q(Stage.OFFER),
        narrow=any_within("entered_negotiation_at", "lost_at"),
        measures={
            "n": _count(),
            "versions": _sum(Coalesce(versions_sent_by("_left_offer"), Value(0))),
        },
    ),
    "offer_response": Family(
        name="offer_response",
        model=Offer,
        date="_response",
        deal_prefix="deal__",
        annotations={
            "_response": Coalesce(
                F("responded_at"),
                Case(
                    When(
                        Q(deal__entered_negotiation_at__isnull=False)
                        & Q(sent_at__lte=F("deal__entered_negotiation_at"))
                        & ~Exists(
                            Offer.objects.filter(
                                deal=OuterRef("deal"),
                                sent_at__gt=OuterRef("sent_at"),
                                sent_at__lte=OuterRef("deal__entered_negotiation_at"),
                            )
                        ),
                        then=F("deal__entered_negotiation_at"),
                    ),
                    output_field=DateTimeField(),
                ),
                output_field=DateTimeField(),
            ),
        },
        where=Q(sent_at__isnull=False) & ~skipped_q(Stage.OFFER, prefix="deal__"),
        narrow=any_within("responded_at", "deal__entered_negotiation_at"),
        measures={"n": _count(), "days": _sum(duration("_response", "sent_at"))},
    ),
    "negotiation_end": Family(
        name="negotiation_end",
        model=Deal,
        date="_concluded",
        annotations={
            "_concluded": Case(
                When(entered_closing_at__isnull=False, then=F("entered_closing_at")),
                When(lost_stage=Stage.NEGOTIATION, then=F("lost_at")),
                output_field=DateTimeField(),
            ),
            "_rounds": Coalesce(rounds_count(), Value(0)),
        },
        where=Q(entered_negotiation_at__isnull=False) & ~skipped_q(Stage.NEGOTIATION),
        narrow=any_within("entered_closing_at", "lost_at"),
        measures={
            "n": _count(),
            "success": _count(Q(entered_closing_at__isnull=False)),
            "days": _sum(duration("_concluded", "entered_negotiation_at")),
            "rounds": _sum("_rounds"),
        },
    ),
    "closing": Family(
        name="closing",
        model=Deal,
        date="entered_closing_at",
        annotations={"_first_value": first_sent_offer("value_base")},
        measures={
            "n": _count(),
            "discount_n": _count(Q(discount_pct__isnull=False)),
            "discount_sum": _sum("discount_pct"),
            "agreed": _sum(
                "agreed_value_base", Q(agreed_value_base__isnull=False, _first_value__isnull=False)
            ),
            "offered": _sum(
                "_first_value", Q(agreed_value_base__isnull=False, _first_value__isnull=False)
            ),
        },
    ),
    "won": Family(
        name="won",
        model=Deal,
        date="won_at",
        where=WON,
        annotations={
            "_payment_days": ExpressionWrapper(
                TruncDate("closing_document__paid_at", tzinfo=tz())
                - F("closing_document__issue_date"),
                output_field=DurationField(),
            ),
        },
        measures={
            "n": _count(),
            "value": _sum("current_value_base"),
            "close_days": _sum(duration("won_at", "entered_lead_at")),
            "cycle_days": _sum(duration("won_at", "entered_needs_at")),
            "proforma_n": _count(Q(closing_document__document_type=DocumentType.PROFORMA)),
            "proforma_days": _sum(
                "_payment_days", Q(closing_document__document_type=DocumentType.PROFORMA)
            ),
        },
        medians={
            "close_days": duration("won_at", "entered_lead_at"),
            "cycle_days": duration("won_at", "entered_needs_at"),
        },
    ),
    "lost": Family(
        name="lost",
        model=Deal,
        date="lost_at",
        where=Q(status=Status.LOST),
        measures={
            "n": _count(),
            "value": _sum("current_value_base"),
            "opp_n": _count(OPPORTUNITY),
            "opp_value": _sum("current_value_base", OPPORTUNITY),
        },
        breakdowns=("reason", "stage"),
    ),
    # Opportunities both opened and closed, by the later of the two (its day is when
    # the opportunity stops being open even if an import closed it before needs): the
    # owner timeline's "settled" count (kpis.timeline), kept in the ledger; no KPI.
    "settled": Family(
        name="settled",
        model=Deal,
        date="_settled",
        annotations={
            "_settled": Greatest(
                "entered_needs_at", Coalesce("won_at", "lost_at"), output_field=DateTimeField()
            )
        },
        where=OPPORTUNITY & (Q(won_at__isnull=False) | Q(lost_at__isnull=False)),
        narrow=any_within("entered_needs_at", "won_at", "lost_at"),
        measures={"n": _count()},
    ),
    # Open opportunities by their expected close date, with their current value per
    # stage: the weighted pipeline and its coverage (company-level KPIs) read these
    # sums (``CompanyKpis.open_pipeline``) instead of every open deal, so a deal's
    # change moves them by its difference like any other family. A state, not an
    # event: a deal leaves it when it is won or lost, whatever the day. No family KPI.
    "pipeline": Family(
        name="pipeline",
        model=Deal,
        date="expected_close_date",
        local_date=True,
        where=OPEN & OPPORTUNITY,
        measures={
            pipeline_measure(stage): _sum("current_value_base", Q(stage=stage))
            for stage in stages.ORDER
        },
    ),
    **_stage_families(),
}
