"""Server time of each report page, on a database that already holds data.

    DATABASE_URL=postgres://... .venv/bin/python scripts/bench_reports.py [--repeat N]
        [--period 2025-03] [--grain month] [--user USERNAME]

Runs every report page (funnel overview in both views, the six stage reports, company
KPIs, targets, four drill-downs and one CSV export) through Django's test Client, signed
in as a manager (default: the manager of the team with the most reps) and as an admin,
and prints the median server time per page in milliseconds over N repetitions (after
one warm-up request; the first request after clearing the cache is printed apart as
"cold"). Reports read stored snapshots only: run
``recompute_kpis --full`` (or ``make bench``, which seeds and recomputes) first.

No server and no network: requests go straight into the WSGI handler in this process.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "true")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", 20)))
    parser.add_argument("--grain", default="month")
    parser.add_argument("--period", default="", help="default: the latest month with deals")
    parser.add_argument("--user", default="", help="manager username (default: the busiest)")
    args = parser.parse_args()

    import django

    django.setup()
    import logging

    logging.getLogger("lejek.request").setLevel(logging.WARNING)  # one line per request
    from django.conf import settings
    from django.core.cache import cache
    from django.db.models import Count, Max
    from django.test import Client

    from accounts.models import Role, Team, User
    from funnel.models import Deal
    from kpis.periods import Period, local_date

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    if args.period:
        period = Period.parse(args.grain, args.period)
    else:
        last = Deal.objects.aggregate(last=Max("entered_lead_at"))["last"]
        if last is None:
            sys.exit("No deals: seed first (python manage.py seed_demo --deals N).")
        period = Period.containing(args.grain, local_date(last)).previous()
    if args.user:
        manager = User.objects.get(username=args.user)
    else:
        team = (
            Team.objects.filter(manager__isnull=False)
            .annotate(n=Count("members"))
            .order_by("-n")
            .first()
        )
        if team is None:
            sys.exit("No team with a manager.")
        manager = team.manager
    admin = (
        User.objects.filter(role=Role.ADMIN).first()
        or User.objects.filter(is_superuser=True).first()
    )

    query = f"grain={period.grain}&period={period.start.isoformat()}"
    pages = [
        ("overview", f"/reports/?{query}"),
        ("overview cohort", f"/reports/?{query}&view=cohort"),
        *(
            (f"stage {s}", f"/reports/stage/{s}/?{query}")
            for s in ("lead", "qualification", "needs", "offer", "negotiation", "closing")
        ),
        ("company", f"/reports/company/?{query}"),
        ("targets", f"/reports/targets/?{query}"),
        ("offer export", f"/reports/stage/offer/?{query}&export=kpis"),
    ]
    print(
        f"{Deal.objects.count():,} deals, period {period}, {args.repeat} repetitions, "
        f"database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"
    )
    for label, user in (("manager " + manager.username, manager), ("admin", admin)):
        if user is None:
            continue
        client = Client()
        client.force_login(user)
        team = user.managed_teams.first()
        slice_key = f"team:{team.pk}" if team and not user.is_lejek_admin else "company"
        drills = [
            (f"drill-down {name}", _drill(code, side, period, slice_key))
            for name, code, side in DRILLS
        ]
        if label.startswith("manager"):
            # The process's first request loads templates, URL patterns and catalogues
            # (about 0.8 s at any data size): timed apart, so that "cold" below is the
            # first request after the cache is cleared, not the first of the process.
            warm_up = _time(client, "/reports/targets/")
            print(f"\nfirst request of the process (targets page): {warm_up:.1f} ms")
        print(f"\n{label}")
        print(f"{'page':<26}{'median ms':>10}{'max ms':>10}{'cold ms':>10}")
        for name, url in [*pages, *drills]:
            cache.clear()
            cold = _time(client, url)
            times = [_time(client, url) for _ in range(args.repeat)]
            print(f"{name:<26}{statistics.median(times):>10.1f}{max(times):>10.1f}{cold:>10.1f}")


#: Drill-downs timed: a lead count (a deal column), the offer acceptance rate (the first
#: offer, derived from offers: accepted ones, then all) and the time in needs (the
#: exit from a stage, derived from several columns).
DRILLS = [
    ("leads", "leads", "numerator"),
    ("acceptance num", "offer_acceptance_pct", "numerator"),
    ("acceptance den", "offer_acceptance_pct", "denominator"),
    ("time in needs", "time_in_needs_days", "numerator"),
]


def _drill(code, side, period, slice_key):
    return (
        f"/reports/deals/?kpi={code}&grain={period.grain}"
        f"&period={period.start.isoformat()}&slice={slice_key}&side={side}"
    )


def _time(client, url):
    start = time.perf_counter()
    response = client.get(url)
    if hasattr(response, "streaming_content"):
        b"".join(response.streaming_content)
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        sys.exit(f"{url}: HTTP {response.status_code}")
    return elapsed


if __name__ == "__main__":
    main()
