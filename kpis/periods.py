"""Periods in the organisation's time zone: day, ISO week, month, quarter, year.

A period is the half-open interval [start, end) between two local midnights; a period
is named by its grain and its first day. Every boundary is computed in local time, then
made aware, so a moment near midnight falls in the right day (pitfalls.md).
"""

import datetime
import re
import zoneinfo
from dataclasses import dataclass

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Grain(models.TextChoices):
    DAY = "day", _("Day")
    WEEK = "week", _("Week")
    MONTH = "month", _("Month")
    QUARTER = "quarter", _("Quarter")
    YEAR = "year", _("Year")


GRAINS = tuple(Grain)


def tz():
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def start_of(grain, day: datetime.date) -> datetime.date:
    """The first day of the ``grain`` period containing ``day``."""
    grain = Grain(grain)
    if grain == Grain.DAY:
        return day
    if grain == Grain.WEEK:
        return day - datetime.timedelta(days=day.weekday())
    if grain == Grain.MONTH:
        return day.replace(day=1)
    if grain == Grain.QUARTER:
        return datetime.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    return datetime.date(day.year, 1, 1)


def next_start(grain, start: datetime.date) -> datetime.date:
    grain = Grain(grain)
    if grain == Grain.DAY:
        return start + datetime.timedelta(days=1)
    if grain == Grain.WEEK:
        return start + datetime.timedelta(days=7)
    months = {Grain.MONTH: 1, Grain.QUARTER: 3, Grain.YEAR: 12}[grain]
    month = start.month - 1 + months
    return datetime.date(start.year + month // 12, month % 12 + 1, 1)


def previous_start(grain, start: datetime.date) -> datetime.date:
    return start_of(grain, start - datetime.timedelta(days=1))


def local_midnight(day: datetime.date) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time.min, tzinfo=tz())


@dataclass(frozen=True, order=True)
class Period:
    grain: str
    start: datetime.date

    @classmethod
    def containing(cls, grain, day: datetime.date) -> "Period":
        return cls(Grain(grain).value, start_of(grain, day))

    @classmethod
    def parse(cls, grain, text: str) -> "Period":
        """'2025-03-14' (day), '2025-W11' or a date (week), '2025-03' (month),
        '2025-Q1' (quarter), '2025' (year); any date inside the period also works."""
        grain = Grain(grain)
        text = text.strip()
        if m := re.fullmatch(r"(\d{4})-W(\d{1,2})", text):
            return cls(
                grain.value, start_of(grain, datetime.date.fromisocalendar(int(m[1]), int(m[2]), 1))
            )
        if m := re.fullmatch(r"(\d{4})-Q([1-4])", text):
            return cls(grain.value, start_of(grain, datetime.date(int(m[1]), 3 * int(m[2]) - 2, 1)))
        if m := re.fullmatch(r"(\d{4})-(\d{2})", text):
            return cls(grain.value, start_of(grain, datetime.date(int(m[1]), int(m[2]), 1)))
        if m := re.fullmatch(r"(\d{4})", text):
            return cls(grain.value, start_of(grain, datetime.date(int(m[1]), 1, 1)))
        try:
            return cls(grain.value, start_of(grain, datetime.date.fromisoformat(text)))
        except ValueError as exc:
            raise ValueError(f"Not a {grain.value} period: {text!r}") from exc

    @property
    def end(self) -> datetime.date:
        """The first day after the period."""
        return next_start(self.grain, self.start)

    @property
    def start_at(self) -> datetime.datetime:
        return local_midnight(self.start)

    @property
    def end_at(self) -> datetime.datetime:
        return local_midnight(self.end)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def previous(self) -> "Period":
        return Period(self.grain, previous_start(self.grain, self.start))

    def following(self) -> "Period":
        return Period(self.grain, self.end)

    def contains(self, moment) -> bool:
        return self.start_at <= moment < self.end_at

    @property
    def label(self) -> str:
        grain = Grain(self.grain)
        if grain == Grain.DAY:
            return self.start.isoformat()
        if grain == Grain.WEEK:
            year, week, _ = self.start.isocalendar()
            return f"{year}-W{week:02d}"
        if grain == Grain.MONTH:
            return f"{self.start:%Y-%m}"
        if grain == Grain.QUARTER:
            return f"{self.start.year}-Q{(self.start.month - 1) // 3 + 1}"
        return str(self.start.year)

    def __str__(self):
        return self.label


def periods_between(grain, first: datetime.date, last: datetime.date) -> list[Period]:
    """Every ``grain`` period that overlaps [first, last] (both days included)."""
    out = []
    start = start_of(grain, first)
    while start <= last:
        out.append(Period(Grain(grain).value, start))
        start = next_start(grain, start)
    return out


def local_date(moment: datetime.datetime) -> datetime.date:
    return moment.astimezone(tz()).date()


def today() -> datetime.date:
    return datetime.datetime.now(tz()).date()


def hour_of(now=None) -> datetime.datetime:
    """The start of ``now``'s hour (of the current hour by default): statistics taken
    once an hour are stored under it."""
    return (now or timezone.now()).replace(minute=0, second=0, microsecond=0)
