import json as jsonlib

from django.core.management.base import BaseCommand, CommandError

from kpis import reading, recompute
from kpis.definitions import KPIS
from kpis.models import KpiSnapshot
from kpis.periods import GRAINS, Grain, Period


def _number(value):
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


class Command(BaseCommand):
    help = "Print every KPI of one period and slice with its value, numerator and denominator."

    def add_arguments(self, parser):
        parser.add_argument("--grain", choices=[g.value for g in GRAINS], default=Grain.MONTH)
        parser.add_argument("--period", required=True, help="e.g. 2025-03, 2025-Q1, 2025-W10, 2025")
        parser.add_argument(
            "--slice",
            default="company",
            help="company, team:<name>, rep:<username>, channel:<name>, segment:<v>, industry:<v>",
        )
        parser.add_argument(
            "--breakdown", default="", help="e.g. reason:price, stage:offer, source:Google"
        )
        parser.add_argument("--json", action="store_true", help="JSON keyed by KPI code")

    def handle(self, *args, grain, period, slice, breakdown, json=False, **options):
        try:
            target = Period.parse(Grain(grain), period)
            slice_key = reading.resolve_slice(slice)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        never_computed = not KpiSnapshot.objects.filter(
            grain=grain, period_start=target.start
        ).exists()
        if never_computed or reading.is_dirty(target):
            # An operator asking for numbers gets fresh ones, not the stale snapshot.
            recompute.recompute_period(grain, target.start)
        values = reading.kpi_values(grain, target, slice_key, breakdown)
        if json:
            out = {
                code: {
                    "value": _number(v["value"]),
                    "numerator": _number(v["numerator"]),
                    "denominator": _number(v["denominator"]),
                    **({"extra": v["extra"]} if v["extra"] else {}),
                    **({"immature": True} if v["immature"] else {}),
                }
                for code, v in values.items()
            }
            for code, parts in reading.composites(values).items():
                out[code] = {part: _number(value) for part, value in parts.items()}
            self.stdout.write(_json_dumps(out))
            return
        self.stdout.write(f"{grain} {target} · {slice_key}{' · ' + breakdown if breakdown else ''}")
        for code, v in values.items():
            kpi = KPIS[code]
            value = "—" if v["value"] is None else f"{v['value']:.4f}".rstrip("0").rstrip(".")
            num = "" if v["numerator"] is None else _number(v["numerator"])
            den = "" if v["denominator"] is None else _number(v["denominator"])
            flag = " (immature)" if v["immature"] else ""
            self.stdout.write(f"{code:40} {value:>16}  {num!s:>16} / {den!s:<12} {kpi.unit}{flag}")


def _json_dumps(data):
    return jsonlib.dumps(data, indent=2, ensure_ascii=False, sort_keys=False)
