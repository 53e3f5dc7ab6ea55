"""`make bench`: KPI engine figures on a throw-away PostgreSQL seeded with demo data.

Prints, measured in the same run:
- the demo seed time;
- the full recompute time, the time of one hand-written SQL statement that scans the
  same tables once and aggregates stage counts, durations and values per month and
  slice (the practical floor), and their ratio;
- one transition end to end (transition + dirty marks + incremental recompute), the
  median of five more in the same process (a worker that has run one before), and
  the step that follows it (the larger periods' medians of the changed slices);
- with a Celery worker on a real redis-server: seconds from a committed transition to
  an updated snapshot, on the worker's first task and on a second transition;
- the full recompute fanned out as Celery tasks (kpis.recompute_all), with one worker
  and with two on the same data;
- the server time of every report page (scripts/bench_reports.py);
- the deals import speed (scripts/bench_import.py, BENCH_IMPORT_ROWS rows).

BENCH_DEALS (default 100000) sets the size; BENCH_SKIP=fanout,reports,import leaves
parts out.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.servers import postgres_server, redis_server  # noqa: E402

FLOOR_SQL = """
WITH offers AS (
    SELECT deal_id, count(*) FILTER (WHERE sent_at IS NOT NULL) AS sent,
           min(sent_at) AS first_sent,
           sum(extract(epoch FROM sent_at - prep_started_at)) AS prep
    FROM funnel_offer GROUP BY deal_id
), activities AS (
    SELECT deal_id, count(*) AS n, min(held_at) AS first_held FROM funnel_activity GROUP BY deal_id
), history AS (
    SELECT deal_id, count(*) FILTER (WHERE event = 'skipped') AS skipped FROM funnel_stagehistory GROUP BY deal_id
)
SELECT date_trunc('month', d.entered_lead_at AT TIME ZONE %(tz)s) AS month,
       d.owner_id, d.channel_id, d.segment, d.industry,
       count(*) AS leads,
       count(d.entered_qualification_at), count(d.entered_needs_at), count(d.entered_offer_at),
       count(d.entered_negotiation_at), count(d.entered_closing_at),
       count(*) FILTER (WHERE d.status = 'won') AS won,
       count(*) FILTER (WHERE d.status = 'lost') AS lost,
       sum(extract(epoch FROM d.entered_needs_at - d.entered_lead_at)),
       sum(extract(epoch FROM d.won_at - d.entered_lead_at)),
       sum(d.current_value_base),
       sum(d.current_value_base) FILTER (WHERE d.status = 'won'),
       sum(o.sent), sum(o.prep), sum(a.n), sum(h.skipped)
FROM funnel_deal d
LEFT JOIN offers o ON o.deal_id = d.id
LEFT JOIN activities a ON a.deal_id = d.id
LEFT JOIN history h ON h.deal_id = d.id
GROUP BY 1, 2, 3, 4, 5
"""

MEASURE = """
import json, time, django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from django.conf import settings
from django.db import connection
from kpis import recompute
from kpis.models import KpiSnapshot
out = {}
t = time.perf_counter()
with connection.cursor() as cur:
    cur.execute(FLOOR_SQL, {"tz": settings.TIME_ZONE})
    out["floor_rows"] = len(cur.fetchall())
out["floor_s"] = time.perf_counter() - t
t = time.perf_counter()
recompute.recompute_all()
out["full_s"] = time.perf_counter() - t
out["snapshots"] = KpiSnapshot.objects.count()

from funnel import domain
from funnel.models import Deal
from funnel.stages import Stage

# Move the newest qualification deal to needs and recompute what it dirtied: (the
# deal, seconds of the change itself, seconds end to end, days recomputed).
def transition():
    deal = Deal.objects.open().filter(stage=Stage.QUALIFICATION).order_by("-entered_qualification_at").first()
    t = time.perf_counter()
    domain.move_forward(deal, Stage.NEEDS, by=None)
    write = time.perf_counter() - t
    taken = 0
    while batch := recompute.recompute_dirty():
        taken += batch
    return deal, write, time.perf_counter() - t, taken


deal, out["transition_write_s"], out["transition_s"], out["transition_dirty_days"] = transition()
# The step that follows it: the larger periods' medians of the changed slices.
t = time.perf_counter()
recompute.refresh_stale_medians()
out["medians_s"] = time.perf_counter() - t
# What a change reads twice, applied as its deal's difference (kpis.changes): the
# deal's contribution to every family, before and after; the median of five, the
# first one warming the plans.
from kpis.compute import contributions
times = []
for _ in range(5):
    t = time.perf_counter()
    contributions([deal.pk])
    times.append(time.perf_counter() - t)
out["contribution_s"] = sorted(times)[2]
# The same, on a worker that has run transitions before (what a worker process does
# all day): five more transitions, each of another deal, their median.
times, writes = [], []
for _ in range(5):
    _, write, total, _ = transition()
    writes.append(write)
    times.append(total)
    recompute.refresh_stale_medians()
out["warm_transition_s"] = sorted(times)[2]
out["warm_transition_write_s"] = sorted(writes)[2]
print("RESULT " + json.dumps(out))
"""

LATENCY = """
import json, time, django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from django.db import transaction
from funnel import domain
from funnel.models import Deal
from funnel.stages import Stage
from django.utils import timezone
from kpis.company import hour_pending
from kpis import dirty
from kpis.models import KpiSnapshot
from kpis.periods import Period, today
def qualified(grain):
    period = Period.containing(grain, today())
    snap = KpiSnapshot.objects.filter(kpi="qualified_leads", grain=grain, period_start=period.start, slice="company").first()
    return snap.value if snap else 0
out = {}
# Twice: the worker's first task (it builds what it keeps between recomputes, the
# customer timeline), then a second transition on a worker that has run before.
for prefix in ("", "warm_"):
    before = {grain: qualified(grain) for grain in ("day", "year")}
    deal = Deal.objects.open().filter(stage=Stage.QUALIFICATION).order_by("-entered_qualification_at").first()
    with transaction.atomic():
        domain.move_forward(deal, Stage.NEEDS, by=None)
    t = time.perf_counter()
    # The day grain is recomputed (and committed) first, the year last.
    for grain, name in (("day", "latency_s"), ("year", "latency_all_s")):
        while qualified(grain) == before[grain] and time.perf_counter() - t < 600:
            time.sleep(0.05)
        out[prefix + name] = time.perf_counter() - t
    # Let the worker finish its task: the hour's inputs may follow the dirty days.
    while (dirty.pending() or hour_pending(timezone.now())) and time.perf_counter() - t < 600:
        time.sleep(0.2)
    time.sleep(1)
print("RESULT " + json.dumps(out))
"""


FANOUT = """
import json, time, django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from kpis.models import RecomputeJob
from kpis.tasks import recompute_all
RecomputeJob.objects.all().delete()
t = time.perf_counter()
recompute_all.delay()
while not RecomputeJob.objects.filter(finished_at__isnull=False).exists():
    time.sleep(0.2)
    if time.perf_counter() - t > 7200:
        raise SystemExit("the fanned-out recompute did not finish in 2 hours")
job = RecomputeJob.objects.get()
print("RESULT " + json.dumps({"fanout_s": time.perf_counter() - t, "parts": job.parts}))
"""


def workers(py, env, count):
    """``count`` Celery worker processes, one task at a time each."""
    return [
        subprocess.Popen(
            [
                py,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool=solo",
                "--loglevel=WARNING",
                "-n",
                f"bench{i}@%h",
            ],
            cwd=ROOT,
            env=env,
        )
        for i in range(count)
    ]


def stop(procs):
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait(30)


def result(proc):
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            import json

            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(proc.stdout + proc.stderr)


def main():
    deals = int(os.environ.get("BENCH_DEALS", "100000"))
    py = str(ROOT / ".venv" / "bin" / "python")
    with postgres_server() as database_url, redis_server() as redis:
        # As production runs: DEBUG off (no query log kept), static files collected
        # (the report pages render through the manifest storage).
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url,
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-secret-key-not-for-any-deployment",
            "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "LOG_LEVEL": "WARNING",
        }
        subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        subprocess.run(
            [py, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
        )
        t = time.perf_counter()
        subprocess.run(
            [py, "manage.py", "seed_demo", "--deals", str(deals), "--seed", "1"],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        seed_s = time.perf_counter() - t
        code = f"FLOOR_SQL = {FLOOR_SQL!r}\n" + MEASURE
        figures = result(
            subprocess.run([py, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
        )
        print(f"engine figures: {figures}", flush=True)
        worker = subprocess.Popen(
            [py, "-m", "celery", "-A", "config", "worker", "--pool=solo", "--loglevel=WARNING"],
            cwd=ROOT,
            env=env,
        )
        try:
            time.sleep(5)
            latency = result(
                subprocess.run(
                    [py, "-c", LATENCY], cwd=ROOT, env=env, capture_output=True, text=True
                )
            )
        finally:
            # The worker may be mid-recompute: the figure is taken, stop it now.
            worker.kill()
            worker.wait(30)
        skip = set(os.environ.get("BENCH_SKIP", "").split(","))
        fanout = {}
        if "fanout" not in skip:
            for count in (1, 2):
                procs = workers(py, env, count)
                try:
                    time.sleep(5)
                    fanout[count] = result(
                        subprocess.run(
                            [py, "-c", FANOUT], cwd=ROOT, env=env, capture_output=True, text=True
                        )
                    )
                finally:
                    stop(procs)
                print(f"fanned-out recompute, {count} worker(s): {fanout[count]}", flush=True)
        if "reports" not in skip:
            print("\nReport pages (server time through the test client):", flush=True)
            subprocess.run(
                [py, "scripts/bench_reports.py", "--repeat", os.environ.get("BENCH_REPEAT", "10")],
                cwd=ROOT,
                env=env,
                check=False,
            )
        if "import" not in skip:
            print("\nDeals import:", flush=True)
            subprocess.run(
                [py, "scripts/bench_import.py"],
                cwd=ROOT,
                env={**env, "BENCH_IMPORT_ROWS": os.environ.get("BENCH_IMPORT_ROWS", "100000")},
                check=False,
            )
    print(f"\nBench on PostgreSQL, {deals:,} demo deals, {os.cpu_count()} cores")
    print(f"seed_demo:                          {seed_s:8.1f} s")
    print(
        f"full recompute:                     {figures['full_s']:8.1f} s ({figures['snapshots']:,} snapshot rows)"
    )
    print(
        f"floor (one SQL scan, month x slice): {figures['floor_s']:8.2f} s ({figures['floor_rows']:,} rows)"
    )
    print(
        f"ratio full / floor:                 {figures['full_s'] / figures['floor_s']:8.1f}  (goal <= 3)"
    )
    print(
        f"one transition end to end:          {figures['transition_s'] * 1000:8.0f} ms "
        f"({figures['transition_dirty_days']} dirty days; goal < 100 ms)"
    )
    print(
        f"  of which the change itself:        {figures['transition_write_s'] * 1000:8.0f} ms "
        f"(domain.move_forward, keeping the deal's contribution before it)"
    )
    print(
        f"the next transitions (median of 5):  {figures['warm_transition_s'] * 1000:8.0f} ms "
        f"(the change itself {figures['warm_transition_write_s'] * 1000:.0f} ms; "
        f"the process has run one before)"
    )
    print(
        f"  then its larger periods' medians:  {figures['medians_s'] * 1000:8.0f} ms "
        f"(the step that follows, kpis.recompute.refresh_stale_medians)"
    )
    print(
        f"  one deal's contribution, every family: {figures['contribution_s'] * 1000:6.1f} ms "
        f"(kpis.compute.contributions, median of 5)"
    )
    print(
        f"commit -> snapshot via Redis worker: {latency['latency_s']:8.2f} s (goal < 5 s; day grain)"
    )
    print(
        f"commit -> every grain updated:       {latency['latency_all_s']:8.2f} s (year grain last)"
    )
    print(
        f"the same, a second transition:       {latency['warm_latency_s']:8.2f} s day grain, "
        f"{latency['warm_latency_all_s']:.2f} s every grain (the worker has run before)"
    )
    for count, figures_n in fanout.items():
        ratio = figures_n["fanout_s"] / fanout[1]["fanout_s"]
        print(
            f"full recompute fanned out, {count} worker(s): {figures_n['fanout_s']:8.1f} s "
            f"({figures_n['parts']} parts; {ratio:.2f} x one worker)"
        )


if __name__ == "__main__":
    main()
