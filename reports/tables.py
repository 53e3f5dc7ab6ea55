"""Report tables built from stored snapshots: one object serves the page and the CSV
export, so what is exported is what is shown."""

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from funnel import stages
from funnel.models import LostReason
from funnel.stages import Stage
from kpis.definitions import KPIS
from reports.data import csv_number
from reports.layouts import BREAKDOWN_TABLE, KPIS_TABLE, SLICES_TABLE

FUNNEL_PERIOD, FUNNEL_COHORT = "period", "cohort"
VIEWS = ((FUNNEL_PERIOD, gettext_lazy("Period view")), (FUNNEL_COHORT, gettext_lazy("Cohort view")))


class KpiTable:
    """One row per KPI: value, previous period, change, numerator, denominator."""

    kind = KPIS_TABLE

    def __init__(self, table, snapshots):
        self.table = table
        self.key, self.title, self.note = table.key, table.title, table.note
        self.rows = [snapshots.get(code) for code in table.codes if snapshots.applies(code)]
        self.period = snapshots.period

    def csv_header(self):
        return [
            _("KPI"),
            _("Code"),
            _("Period"),
            _("Value"),
            _("Previous period"),
            _("Change"),
            _("Numerator"),
            _("Denominator"),
            _("Immature cohort"),
            _("Formula"),
        ]

    def csv_rows(self):
        for r in self.rows:
            unit = r.kpi.unit
            yield [
                str(r.kpi.label),
                r.kpi.code,
                r.period.label,
                csv_number(r.value, unit),
                csv_number(r.previous.value, unit),
                csv_number(r.delta, unit),
                csv_number(r.numerator, "ratio"),
                csv_number(r.denominator, "ratio"),
                _("yes") if r.immature else "",
                str(r.kpi.formula),
            ]


class GroupedTable:
    """One row per breakdown value (or per slice, e.g. channel), one column per KPI."""

    def __init__(self, table, groups, labels):
        self.table = table
        self.kind = table.kind
        self.key, self.title, self.note = table.key, table.title, table.note
        self.kpis = [KPIS[c] for c in table.codes]
        self.rows = [
            (labels.get(key, key.split(":", 1)[-1]), [readings.get(c) for c in table.codes])
            for key, readings in groups.items()
        ]

    def csv_header(self):
        header = [self.table.breakdown or self.table.slice_prefix]
        for kpi in self.kpis:
            header += [str(kpi.label), _("Numerator"), _("Denominator")]
        return header

    def csv_rows(self):
        for label, readings in self.rows:
            row = [label]
            for kpi, r in zip(self.kpis, readings, strict=True):
                if r is None:
                    row += ["", "", ""]
                else:
                    row += [
                        csv_number(r.value, kpi.unit),
                        csv_number(r.numerator, "ratio"),
                        csv_number(r.denominator, "ratio"),
                    ]
            yield row


def breakdown_labels(tables):
    """Readable names of breakdown values: lost reasons by their label, stages by theirs;
    answers given in qualification are shown as typed."""
    labels = {f"stage:{s.value}": str(s.label) for s in stages.ORDER}
    if any(t.breakdown == "reason" for t in tables):
        labels.update({f"reason:{r.code}": r.label for r in LostReason.objects.all()})
    return labels


def build_tables(tables, snapshots, scope, slice_key):
    """The rendered tables of a report. Breakdowns and other slices are read in one
    query each, and only when the report has such a table."""
    out = []
    breakdown_codes = sorted({c for t in tables if t.kind == BREAKDOWN_TABLE for c in t.codes})
    if breakdown_codes:
        snapshots.load_breakdowns(breakdown_codes)
        labels = breakdown_labels(tables)
    for table in tables:
        if table.kind == KPIS_TABLE:
            out.append(KpiTable(table, snapshots))
        elif table.kind == BREAKDOWN_TABLE:
            groups = snapshots.breakdowns(table.codes, table.breakdown)
            out.append(GroupedTable(table, groups, labels))
        elif table.kind == SLICES_TABLE and slice_key == "company":
            groups = snapshots.other_slices(table.codes, prefix=f"{table.slice_prefix}:")
            names = {f"channel:{c.pk}": c.name for c in scope.channels}
            out.append(GroupedTable(table, groups, names))
    return out


class FunnelTable:
    """The funnel overview: one row per stage."""

    kind = "funnel"
    key = "funnel"

    def __init__(self, snapshots, view, current):
        self.view = view
        self.current = current  # the period shown contains today: "now" values apply
        self.title = _("Funnel by stage")
        self.note = ""
        self.rows = []
        for stage in stages.ORDER:
            nxt = stages.following(stage)
            skipped = stage not in (Stage.LEAD, Stage.CLOSING)
            self.rows.append(
                {
                    "stage": stage,
                    "next": nxt,
                    "dropoff": snapshots.get(f"dropoff_{stage}_pct"),
                    "conversion": snapshots.get(f"conversion_{stage}_{nxt}_pct") if nxt else None,
                    "days": snapshots.get(f"time_in_{stage}_days"),
                    "median": snapshots.get(f"time_in_{stage}_days_median"),
                    "skipped": snapshots.get(f"skipped_{stage}_pct") if skipped else None,
                    "open_deals": snapshots.get(f"open_deals_{stage}"),
                    "open_value": snapshots.get(f"open_value_{stage}"),
                }
            )

    def chart(self):
        labels = [str(r["stage"].label) for r in self.rows]
        if self.view == FUNNEL_COHORT:
            datasets = [
                {
                    "label": _("Conversion to the next stage %"),
                    "data": [
                        _float(r["conversion"]) if r["conversion"] else None for r in self.rows
                    ],
                },
                {"label": _("Drop-off %"), "data": [_float(r["dropoff"]) for r in self.rows]},
            ]
        else:
            datasets = [
                {
                    "label": _("Deals that entered the stage"),
                    "data": [_float(r["dropoff"], "denominator") for r in self.rows],
                }
            ]
        return {"kind": "funnel", "labels": labels, "datasets": datasets}

    def csv_header(self):
        return [
            _("Stage"),
            _("Deals that entered"),
            _("Reached the next stage"),
            _("Conversion to the next stage %"),
            _("Lost at the stage"),
            _("Drop-off %"),
            _("Still open"),
            _("Mean days in stage"),
            _("Median days in stage"),
            _("Skipped %"),
            _("Open deals now"),
            _("Open value now"),
        ]

    def csv_rows(self):
        for r in self.rows:
            conv, drop = r["conversion"], r["dropoff"]
            yield [
                str(r["stage"].label),
                csv_number(drop.denominator, "count"),
                csv_number(conv.numerator, "count") if conv else "",
                csv_number(conv.value, "pct") if conv else "",
                csv_number(drop.numerator, "count"),
                csv_number(drop.value, "pct"),
                drop.still_open if drop.still_open is not None else "",
                csv_number(r["days"].value, "days"),
                csv_number(r["median"].value, "days"),
                csv_number(r["skipped"].value, "pct") if r["skipped"] else "",
                csv_number(r["open_deals"].value, "count") if self.current else "",
                csv_number(r["open_value"].value, "money") if self.current else "",
            ]


def _float(reading, part="value"):
    value = getattr(reading, part)
    return None if value is None else float(value)
