from django.core.management.base import BaseCommand, CommandError

from kpis import recompute
from kpis.periods import GRAINS, Grain, Period


class Command(BaseCommand):
    help = (
        "Recompute stored KPIs: what is dirty (default), everything (--full), or one "
        "period (--grain month --period 2025-03)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--full", action="store_true", help="every period of every grain")
        parser.add_argument("--grain", choices=[g.value for g in GRAINS])
        parser.add_argument("--period", help="e.g. 2025-03, 2025-Q1, 2025-W10, 2025, 2025-03-14")

    def handle(self, *args, full=False, grain=None, period=None, **options):
        if full:
            rows = recompute.recompute_all()
            self.stdout.write(f"Recomputed every period: {rows} snapshot rows.")
            return
        if grain or period:
            if not (grain and period):
                raise CommandError("--grain and --period go together.")
            try:
                target = Period.parse(Grain(grain), period)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            rows = recompute.recompute_period(grain, target.start)
            self.stdout.write(f"Recomputed {grain} {target}: {rows} snapshot rows.")
            return
        days = recompute.recompute_all_dirty()
        self.stdout.write(f"Recomputed {days} dirty days.")
