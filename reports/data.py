"""Reading the stored snapshots a report shows, in a fixed number of queries.

A report never aggregates deals: it reads KpiSnapshot rows (kpis/models.py) for one
slice, a range of periods and the KPIs on the page. A missing row reads as the KPI's
empty value, exactly as kpis/reading.py reads it: 0 for counts and sums, no value for
ratios, means, medians and company-level KPIs.
"""

from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Max
from django.urls import reverse
from django.utils import formats
from django.utils.translation import gettext as _

from kpis import reading
from kpis.definitions import COUNT, DAYS, KPIS, MONEY, MONEY_PER_DAY, NOW, PCT, RATIO
from kpis.drilldown import COMPANY_FAMILIES
from kpis.models import KpiSnapshot
from kpis.periods import local_date, today

DECIMALS = {COUNT: 0, MONEY: 2, MONEY_PER_DAY: 2, PCT: 1, DAYS: 1, RATIO: 2}
#: Digits kept in CSV exports: exact enough for any spreadsheet, no float noise.
CSV_DECIMALS = {COUNT: 0, MONEY: 2, MONEY_PER_DAY: 2, PCT: 4, DAYS: 4, RATIO: 4}


def empty(kpi):
    """(value, numerator, denominator) of a missing snapshot (kpis/reading.py)."""
    if kpi.median or kpi.computed_by == "company":
        return None, None, None
    if kpi.denominator is None:
        return Decimal(0), Decimal(0), None
    return None, Decimal(0), Decimal(0)


def can_drill(kpi):
    return bool(kpi.family or kpi.code in COMPANY_FAMILIES) and not kpi.median


def has_deals(kpi, side):
    """Whether a list of deals stands behind a KPI's numerator or denominator. Spend,
    targets and people are not deals; company-level KPIs list only their won deals."""
    if not can_drill(kpi):
        return False
    if side == "numerator":
        return kpi.numerator != "spend"
    if kpi.computed_by == "company" or kpi.denominator == "spend":
        return False
    return kpi.denominator is not None or kpi.computed_by == "outcomes"


def deals_for(kpi, side, numerator, denominator):
    """The queryset of ``side`` from ``deals_behind``'s pair. When the numerator is
    spend, the deals the engine lists as numerator rows are the denominator's."""
    if side == "numerator":
        return numerator
    if kpi.numerator == "spend":
        return numerator
    return denominator


def format_number(value, unit, with_unit=True):
    if value is None:
        return "—"
    text = formats.number_format(
        Decimal(value).quantize(Decimal(1).scaleb(-DECIMALS.get(unit, 2))),
        DECIMALS.get(unit, 2),
        use_l10n=True,
        force_grouping=True,
    )
    if not with_unit:
        return text
    if unit == PCT:
        return f"{text} %"
    if unit == MONEY:
        return f"{text} {settings.LEJEK_BASE_CURRENCY}"
    if unit == MONEY_PER_DAY:
        return _("%(amount)s %(currency)s/day") % {
            "amount": text,
            "currency": settings.LEJEK_BASE_CURRENCY,
        }
    return text


def csv_number(value, unit):
    if value is None:
        return ""
    return Decimal(value).quantize(Decimal(1).scaleb(-CSV_DECIMALS.get(unit, 4)))


@dataclass
class Reading:
    """One KPI value for a period, slice and breakdown, with what it was computed from."""

    kpi: object
    period: object
    slice_key: str
    breakdown: str = ""
    value: Decimal | None = None
    numerator: Decimal | None = None
    denominator: Decimal | None = None
    extra: dict = field(default_factory=dict)
    immature: bool = False
    previous: "Reading | None" = None

    @property
    def display(self):
        return format_number(self.value, self.kpi.unit)

    @property
    def numerator_display(self):
        return format_part(self.numerator)

    @property
    def denominator_display(self):
        return format_part(self.denominator)

    @property
    def delta(self):
        if self.previous is None or self.value is None or self.previous.value is None:
            return None
        return self.value - self.previous.value

    @property
    def delta_display(self):
        delta = self.delta
        if delta is None:
            return "—"
        text = format_number(abs(delta), self.kpi.unit, with_unit=False)
        suffix = _(" pp") if self.kpi.unit == PCT else ""
        sign = "+" if delta > 0 else "−" if delta < 0 else "±"
        return f"{sign}{text}{suffix}"

    @property
    def trend_class(self):
        """up/down/flat and good/bad/neutral, by the KPI's direction."""
        delta = self.delta
        if delta is None or delta == 0:
            return "flat neutral"
        arrow = "up" if delta > 0 else "down"
        if not self.kpi.direction:
            return f"{arrow} neutral"
        good = (delta > 0) == (self.kpi.direction > 0)
        return f"{arrow} {'good' if good else 'bad'}"

    @property
    def arrow(self):
        delta = self.delta
        if delta is None or delta == 0:
            return "→"
        return "▲" if delta > 0 else "▼"

    @property
    def has_drilldown(self):
        return can_drill(self.kpi)

    def drill_url(self, side="numerator"):
        if not self.has_drilldown:
            return ""
        query = {
            "kpi": self.kpi.code,
            "grain": self.period.grain,
            "period": self.period.start.isoformat(),
            "slice": self.slice_key,
            "side": side,
        }
        if self.breakdown:
            query["breakdown"] = self.breakdown
        return f"{reverse('reports:deals')}?{urlencode(query)}"

    @property
    def numerator_url(self):
        return self.drill_url("numerator") if has_deals(self.kpi, "numerator") else ""

    @property
    def denominator_url(self):
        if has_deals(self.kpi, "denominator"):
            return self.drill_url("denominator")
        return ""

    @property
    def pending(self):
        return self.extra.get("pending")

    @property
    def still_open(self):
        return self.extra.get("open")


def format_part(value):
    """A numerator or denominator: whole numbers as such, anything else to 2 places."""
    if value is None:
        return "—"
    value = Decimal(value)
    places = 0 if value == value.to_integral_value() else 2
    return formats.number_format(
        value.quantize(Decimal(1).scaleb(-places)), places, use_l10n=True, force_grouping=True
    )


class Snapshots:
    """Stored values of ``codes`` for one slice over ``periods`` (the trend; its last
    is the period shown). One query for the totals, one for the breakdowns of the period
    shown when asked for, one for other slices (e.g. every channel) when asked for."""

    def __init__(self, grain, periods, slice_key, codes, now=None):
        self.grain = grain
        self.periods = list(periods)
        self.period = self.periods[-1]
        self.previous_period = self.period.previous()
        self.slice_key = slice_key
        slice_type = slice_key.split(":", 1)[0]
        self.codes = [c for c in codes if slice_type in KPIS[c].slices]
        starts = {p.start for p in self.periods} | {self.previous_period.start}
        self.rows = {
            (s.kpi, s.period_start): s
            for s in KpiSnapshot.objects.filter(
                grain=grain,
                period_start__in=sorted(starts),
                slice=slice_key,
                breakdown="",
                kpi__in=self.codes,
            )
        }
        # A "now" KPI (open and stalled deals) has a value in the period holding today
        # only: any other period's reads as no value, not as 0, and is not compared.
        self.today = local_date(now) if now else today()
        self.immature = {p.start: reading.is_immature(p, now) for p in self.periods}
        self.immature[self.previous_period.start] = reading.is_immature(self.previous_period, now)
        stamps = [s.computed_at for s in self.rows.values() if s.period_start == self.period.start]
        self.computed_at = max(stamps) if stamps else None

    def _reading(self, kpi, period, slice_key, breakdown, snap, immature):
        if kpi.basis == NOW and not period.start <= self.today < period.end:
            value, num, den, extra = None, None, None, {}
        elif snap is None:
            value, num, den = empty(kpi)
            extra = {}
        else:
            value, num, den, extra = snap.value, snap.numerator, snap.denominator, snap.extra
        return Reading(
            kpi,
            period,
            slice_key,
            breakdown,
            value,
            num,
            den,
            extra or {},
            immature=kpi.is_cohort and immature,
        )

    def get(self, code, period=None):
        """The value of ``code`` in ``period`` (default: the one shown), compared with
        the period before it when it is the one shown."""
        kpi = KPIS[code]
        period = period or self.period
        found = self._reading(
            kpi,
            period,
            self.slice_key,
            "",
            self.rows.get((code, period.start)),
            self.immature.get(period.start, False),
        )
        if period == self.period:
            found.previous = self._reading(
                kpi,
                self.previous_period,
                self.slice_key,
                "",
                self.rows.get((code, self.previous_period.start)),
                self.immature[self.previous_period.start],
            )
        return found

    def applies(self, code):
        return code in self.codes

    def series(self, code):
        return [self.get(code, p).value for p in self.periods]

    def trend_data(self, codes):
        """What the trend chart draws: labels and one series per KPI (numbers or null)."""
        return {
            "labels": [p.label for p in self.periods],
            "series": [
                {
                    "code": code,
                    "label": str(KPIS[code].label),
                    "unit": KPIS[code].unit,
                    "values": [None if v is None else float(v) for v in self.series(code)],
                }
                for code in codes
                if self.applies(code) and KPIS[code].basis != NOW
            ],
        }

    def breakdowns(self, codes, breakdown_type):
        """{breakdown key: {code: Reading}} of the period shown, for one breakdown type.
        One query; call ``load_breakdowns`` once for every type the page shows."""
        out = {}
        for key, by_code in self._breakdowns.items():
            if key.split(":", 1)[0] != breakdown_type:
                continue
            out[key] = {
                code: self._reading(
                    KPIS[code],
                    self.period,
                    self.slice_key,
                    key,
                    by_code.get(code),
                    self.immature[self.period.start],
                )
                for code in codes
            }
        return dict(sorted(out.items(), key=lambda item: item[0].lower()))

    def load_breakdowns(self, codes):
        self._breakdowns = {}
        for snap in KpiSnapshot.objects.filter(
            grain=self.grain,
            period_start=self.period.start,
            slice=self.slice_key,
            kpi__in=codes,
        ).exclude(breakdown=""):
            self._breakdowns.setdefault(snap.breakdown, {})[snap.kpi] = snap

    def other_slices(self, codes, slice_keys=None, prefix=None):
        """{slice key: {code: Reading}} of the period shown for other slices: those
        given, or every stored slice starting with ``prefix``. One query."""
        qs = KpiSnapshot.objects.filter(
            grain=self.grain, period_start=self.period.start, breakdown="", kpi__in=codes
        )
        if slice_keys is not None:
            qs = qs.filter(slice__in=slice_keys)
        else:
            qs = qs.filter(slice__startswith=prefix)
        stored = {}
        for snap in qs:
            stored.setdefault(snap.slice, {})[snap.kpi] = snap
        keys = slice_keys if slice_keys is not None else sorted(stored)
        immature = self.immature[self.period.start]
        return {
            key: {
                code: self._reading(
                    KPIS[code], self.period, key, "", stored.get(key, {}).get(code), immature
                )
                for code in codes
                if key.split(":", 1)[0] in KPIS[code].slices
            }
            for key in keys
        }


def computed_at(grain, period):
    """When the period's snapshots were last written (None: never)."""
    return KpiSnapshot.objects.filter(grain=grain, period_start=period.start).aggregate(
        at=Max("computed_at")
    )["at"]
