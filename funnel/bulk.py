"""What the two bulk writers share: the demo seeder's bulk executor (funnel/demo.py)
and the import's fast path (funnel/import_bulk.py). Both replay the domain functions
in memory and write the rows those functions would write, column by column."""

from django.db import connection, models
from psycopg.types.json import Jsonb

from funnel.money import CENT
from funnel.stages import Stage, Status

#: Rows per INSERT where COPY is not available (SQLite). Django lowers it further to
#: stay under SQLite's 999 parameters (22 deals or 124 history rows per statement);
#: larger statements only grow the parse cost.
INSERT_BATCH_SIZE = 500

# The columns each replay writes, in the order its row tuples hold them. ``entered_at``
# is the replay's own clock (the moment the domain function would have run), never the
# plan's or the file's moment.
HISTORY_COLUMNS = (
    "deal_id", "event", "from_stage", "to_stage", "at", "by_id", "lost_reason_id", "note",
    "entered_at",
)  # fmt: skip
OFFER_COLUMNS = (
    "deal_id", "version", "value", "value_base", "prep_started_at", "sent_at",
    "responded_at", "status", "notes", "created_by_id", "sent_by_id", "responded_by_id",
)  # fmt: skip
ROUND_COLUMNS = (
    "deal_id", "number", "held_at", "proposed_value", "proposed_value_base",
    "discount_pct", "notes", "by_id",
)  # fmt: skip
ACTIVITY_COLUMNS = ("deal_id", "kind", "held_at", "outcome", "notes", "by_id")
DOCUMENT_COLUMNS = (
    "deal_id", "document_type", "number", "issue_date", "final_value", "final_value_base",
    "signed_at", "paid_at",
)  # fmt: skip
CHANGE_COLUMNS = ("deal_id", "field", "old_value", "new_value", "at", "by_id", "entered_at")


def model_columns(model, *, with_id=False):
    return tuple(f.attname for f in model._meta.concrete_fields if with_id or not f.primary_key)


def check_columns(tables, writer):
    """A field added to a model must be written by the bulk writers too, as its domain
    function writes it: refuse to run until it is. ``tables``: [(model, columns)]; the
    deal's columns include its id (ids are reserved before the rows are built)."""
    from funnel.models import Deal

    for model, written in tables:
        mismatch = set(model_columns(model, with_id=model is Deal)) ^ set(written)
        if mismatch:
            raise RuntimeError(f"{writer}'s columns of {model.__name__} differ: {mismatch}")


def plain(value):
    """A model default as a database value: enum members become their values."""
    return value.value if isinstance(value, Stage | Status) else value


def cents(value):
    """As ``domain._money`` and ``domain._percent``: two decimal places, as stored."""
    return None if value is None else value.quantize(CENT)


def _copy_rows(model, columns, rows):
    """PostgreSQL: write ``rows`` (tuples of the fields ``columns``, by attribute
    name, as database values) into ``model``'s table with one COPY."""
    quote = connection.ops.quote_name
    column_of = {f.attname: f.column for f in model._meta.concrete_fields}
    names = ", ".join(quote(column_of[c]) for c in columns)
    statement = f"COPY {quote(model._meta.db_table)} ({names}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def insert_rows(model, columns, rows, batch_size=INSERT_BATCH_SIZE):
    """Write new rows of ``model``: tuples of the fields ``columns`` (by attribute name),
    as Python values. One COPY on PostgreSQL (a million rows in seconds, not a minute
    of INSERTs), ``bulk_create`` elsewhere. No primary key is read back."""
    if connection.vendor != "postgresql":
        model.objects.bulk_create(
            [model(**dict(zip(columns, row, strict=True))) for row in rows],
            batch_size=batch_size,
        )
        return
    fields = {f.attname: f for f in model._meta.concrete_fields}
    converters = [
        (i, convert)
        for i, column in enumerate(columns)
        if (convert := _copy_value(fields[column])) is not None
    ]
    if converters:
        rows = (_converted(row, converters) for row in rows)
    _copy_rows(model, columns, rows)


def _converted(row, converters):
    row = list(row)
    for i, convert in converters:
        row[i] = convert(row[i])
    return row


#: Fields whose Python value psycopg takes as Django's PostgreSQL backend would pass
#: it (unchanged; a text enum member dumps as its value, being a ``str``).
_AS_IS = (
    models.CharField,
    models.TextField,
    models.DateField,  # DateTimeField too
    models.IntegerField,  # and its kinds
    models.BooleanField,
    models.ForeignKey,
)


def _copy_value(field):
    """How one field's Python value becomes what COPY writes (None: as it is). Django's
    ``get_db_prep_save`` on every field of every row would cost most of a million
    rows' write; the result is the same."""
    if isinstance(field, models.JSONField):
        return Jsonb
    if isinstance(field, models.DecimalField):
        return lambda value: field.to_python(value) if isinstance(value, float) else value
    if isinstance(field, _AS_IS):
        return None
    return lambda value: field.get_db_prep_save(value, connection)


#: Rows per UPDATE ... FROM (VALUES ...) statement.
UPDATE_BATCH_SIZE = 1000


def update_rows(model, columns, rows, batch_size=UPDATE_BATCH_SIZE):
    """Set the fields ``columns`` (by attribute name) of existing rows of ``model``:
    ``rows`` are tuples (primary key, *values). On PostgreSQL one ``UPDATE ... FROM
    (VALUES ...)`` per batch: ``bulk_update``'s CASE per field and row costs more to
    build than the write (at 1M deals, most of an incremental recompute's writing);
    ``bulk_update`` elsewhere."""
    rows = list(rows)
    if not rows:
        return
    pk = model._meta.pk
    if connection.vendor != "postgresql":
        model.objects.bulk_update(
            [
                model(**{pk.attname: row[0], **dict(zip(columns, row[1:], strict=True))})
                for row in rows
            ],
            list(columns),
            batch_size=batch_size,
        )
        return
    quote = connection.ops.quote_name
    fields = [model._meta.get_field(c) for c in columns]
    casts = [f"%s::{f.cast_db_type(connection)}" for f in (pk, *fields)]
    names = ", ".join(quote(f.column) for f in (pk, *fields))
    assignments = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for f in fields)
    table = quote(model._meta.db_table)
    with connection.cursor() as cursor:
        for i in range(0, len(rows), batch_size):
            batch = rows[i : i + batch_size]
            values = ", ".join(f"({', '.join(casts)})" for _ in batch)
            params = []
            for row in batch:
                params.append(row[0])
                params.extend(
                    f.get_db_prep_save(value, connection)
                    for f, value in zip(fields, row[1:], strict=True)
                )
            cursor.execute(
                f"UPDATE {table} AS t SET {assignments} FROM (VALUES {values}) AS v({names}) "
                f"WHERE t.{quote(pk.column)} = v.{quote(pk.column)}",
                params,
            )
