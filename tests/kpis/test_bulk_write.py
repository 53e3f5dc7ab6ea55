"""Rows written in bulk (COPY on PostgreSQL, INSERTs elsewhere) read back exactly as
Django would have saved them: what a full recompute's million rows go through."""

import datetime
from decimal import Decimal

from django.utils import timezone

from funnel.bulk import insert_rows, update_rows
from kpis.compute import replace
from kpis.models import SNAPSHOT_ROW_FIELDS, KpiSnapshot, PeriodMeasures, SnapshotRow
from kpis.periods import Grain

DAY = datetime.date(2026, 3, 2)


def row(**changes):
    fields = {
        "kpi": "leads",
        "grain": Grain.DAY,  # an enum member: stored as its value
        "period_start": DAY,
        "slice": "company",
        "breakdown": "",
        "value": Decimal("1.123456786"),
        "numerator": 3,
        "denominator": None,
        "extra": {"open": 2},
        "computed_at": timezone.now(),
    }
    return SnapshotRow(**{**fields, **changes})


def read(**lookup):
    return list(
        KpiSnapshot.objects.filter(**lookup)
        .order_by("slice")
        .values_list(
            "kpi", "grain", "period_start", "slice", "value", "numerator", "denominator", "extra"
        )
    )


def test_insert_rows_writes_every_field_as_django_would(db):
    insert_rows(
        KpiSnapshot,
        SNAPSHOT_ROW_FIELDS,
        [
            tuple(getattr(r, f) for f in SNAPSHOT_ROW_FIELDS)
            for r in (row(), row(slice="rep:7", value=0.25, extra={}))
        ],
    )
    assert read() == [
        ("leads", "day", DAY, "company", Decimal("1.12345679"), Decimal(3), None, {"open": 2}),
        ("leads", "day", DAY, "rep:7", Decimal("0.25"), Decimal(3), None, {}),
    ]
    insert_rows(
        PeriodMeasures,
        ("grain", "period_start", "slice", "breakdown", "sums", "medians"),
        [(Grain.WEEK, DAY, "company", "", {"lead": {"n": 4}}, {"won.close_days": "2.5"})],
    )
    stored = PeriodMeasures.objects.get()
    assert (stored.grain, stored.sums, stored.medians) == (
        "week",
        {"lead": {"n": 4}},
        {"won.close_days": "2.5"},
    )


def test_replace_creates_updates_and_deletes_only_what_changed(db):
    stored = KpiSnapshot.objects.filter(grain="day", period_start=DAY)
    replace(stored, [row(), row(slice="rep:7"), row(slice="rep:8")])
    kept = KpiSnapshot.objects.get(slice="rep:7").pk
    assert replace(stored, [row(), row(slice="rep:7", value=Decimal(2))]) == 2
    assert read() == [
        ("leads", "day", DAY, "company", Decimal("1.12345679"), Decimal(3), None, {"open": 2}),
        ("leads", "day", DAY, "rep:7", Decimal(2), Decimal(3), None, {"open": 2}),
    ]
    assert KpiSnapshot.objects.get(slice="rep:7").pk == kept  # updated in place


def test_update_rows_sets_the_fields_as_django_would_and_nothing_else(db):
    replace(
        KpiSnapshot.objects.filter(grain="day"),
        [row(), row(slice="rep:7"), row(slice="rep:8")],
    )
    pks = dict(KpiSnapshot.objects.values_list("slice", "pk"))
    update_rows(
        KpiSnapshot,
        ["value", "numerator", "denominator", "extra"],
        [
            (pks["company"], 0.5, None, Decimal("7.123456789"), {"open": 0, "note": "ą"}),
            (pks["rep:8"], Decimal("-3.000000006"), 11, 4, {}),
        ],
        batch_size=1,  # two statements
    )
    assert read() == [
        ("leads", "day", DAY, "company", Decimal("0.5"), None, Decimal("7.12345679"),
         {"open": 0, "note": "ą"}),
        ("leads", "day", DAY, "rep:7", Decimal("1.12345679"), Decimal(3), None, {"open": 2}),
        ("leads", "day", DAY, "rep:8", Decimal("-3.00000001"), Decimal(11), Decimal(4), {}),
    ]  # fmt: skip
    measures = PeriodMeasures.objects.create(
        grain=Grain.WEEK, period_start=DAY, slice="company", breakdown="", sums={}, medians={}
    )
    update_rows(PeriodMeasures, ["sums"], [(measures.pk, {"lead": {"n": 4, "days": {"us": 5}}})])
    update_rows(PeriodMeasures, ["medians"], [])  # nothing to write: no statement
    measures.refresh_from_db()
    assert (measures.sums, measures.medians) == ({"lead": {"n": 4, "days": {"us": 5}}}, {})
