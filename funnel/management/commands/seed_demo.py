"""``manage.py seed_demo``: load the deterministic demo year (funnel/demo.py)."""

import datetime

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.utils import timezone

from accounts.models import User
from funnel import demo
from funnel.stages import Stage, Status


def _date(value):
    try:
        return datetime.date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"--until takes a date as YYYY-MM-DD, not {value!r}.") from exc


class Command(BaseCommand):
    help = (
        "Load a deterministic demo year: the cast (password 'lejek-demo', local use only), "
        "channels, spend, costs, companies, contacts and deals in every stage."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--deals", type=int, default=demo.DEFAULT_DEALS, help="how many deals (leads)"
        )
        parser.add_argument(
            "--seed", type=int, default=demo.DEFAULT_SEED, help="the same seed gives the same data"
        )
        parser.add_argument(
            "--until",
            type=_date,
            default=None,
            help="YYYY-MM-DD: the demo year ends at the start of this day (default: today)",
        )
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="do nothing if the database already holds deals",
        )
        parser.add_argument(
            "--executor",
            choices=sorted(demo.EXECUTORS),
            default="bulk",
            help="bulk: in-memory replay and bulk inserts (default); "
            "domain: the domain functions, step by step (the reference path, slow)",
        )
        parser.add_argument("--slow", action="store_true", help="the same as --executor domain")

    def handle(self, *args, deals, seed, until, if_empty, executor, slow, verbosity, **options):
        if isinstance(until, str):  # call_command() passes keyword options unparsed
            until = _date(until)
        if deals < 0:
            raise CommandError("--deals cannot be negative.")
        if until is not None and until > timezone.localdate():
            raise CommandError("--until cannot be later than today: demo moments lie in the past.")
        if slow:
            executor = "domain"

        def progress(done):
            if verbosity >= 2:
                self.stdout.write(f"  {done:,} of {deals:,} deals")

        try:
            result = demo.seed_demo(
                deals=deals, seed=seed, until=until, executor=executor, progress=progress
            )
        except demo.DemoDataExists as exc:
            if if_empty:
                self.stdout.write("The database already holds deals: demo data not loaded.")
                return
            raise CommandError(
                f"{exc} seed_demo loads the demo year into an empty funnel; "
                "use --if-empty to skip quietly."
            ) from exc
        self._summary(result)

    def _summary(self, result):
        plan = result.plan
        year = f"{plan.start.date()} to {(plan.end - datetime.timedelta(days=1)).date()}"
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo year {year} (seed {plan.seed}): {result.deals:,} deals "
                f"in {result.seconds:.1f} s ({result.executor} executor)."
            )
        )
        roles = dict(User.objects.values_list("role").annotate(n=Count("id")).order_by())
        self.stdout.write(
            "Users: "
            + ", ".join(f"{n} {role}" for role, n in sorted(roles.items()))
            + f" (password '{demo.DEMO_PASSWORD}', local use only)"
        )
        counts = demo.deal_counts()
        statuses = list(Status)
        self.stdout.write(f"{'stage':<15}" + "".join(f"{s.value:>10}" for s in statuses))
        for stage in Stage:
            row = "".join(f"{counts[(stage.value, s.value)]:>10,}" for s in statuses)
            self.stdout.write(f"{stage.value:<15}{row}")
        totals = "".join(
            f"{sum(n for (_, st), n in counts.items() if st == s.value):>10,}" for s in statuses
        )
        self.stdout.write(f"{'all':<15}{totals}")
