"""Time a full recompute phase by phase (the figures in docs/benchmarks.md, session 10).

    DEBUG=true PYTHONPATH=. DATABASE_URL=postgres://... [EMPTY=1] python scripts/full_timed.py

With ``EMPTY=1`` the snapshot and ledger tables are emptied first, as after the bench's
seed: only for a throw-away profiling database.
"""

import functools
import os
import time
from collections import defaultdict

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.db import connection  # noqa: E402

from kpis import company, compute, ledger, reading, recompute, timeline  # noqa: E402

TOTAL, CALLS = defaultdict(float), defaultdict(int)


def timed(module, name):
    inner = getattr(module, name)
    label = f"{module.__name__}.{name}"

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            took = time.perf_counter() - start
            TOTAL[label] += took
            CALLS[label] += 1
            if took > 2:
                print(f"  {label} {took:.2f}s", flush=True)

    setattr(module, name, wrapper)


PHASES = {
    compute: [
        "store_days",
        "store",
        "gather",
        "write",
        "replace",
        "refresh_medians",
        "refresh_larger_medians",
        "snapshots",
        "refresh_ledger",
    ],
    company: ["compute", "use_hour_inputs"],
    ledger: ["replace_days", "load", "refresh_medians"],
    reading: ["ensure_maturity"],
    timeline: ["customer_timeline"],
}


def main():
    for module, names in PHASES.items():
        for name in names:
            timed(module, name)
    # kpis.recompute imported these by name.
    for name in ("store_days", "store", "refresh_ledger", "refresh_larger_medians"):
        setattr(recompute, name, getattr(compute, name))
    recompute.customer_timeline = timeline.customer_timeline
    if os.environ.get("EMPTY"):
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE kpis_kpisnapshot, kpis_periodmeasures, kpis_ledgerstate")
    start = time.perf_counter()
    rows = recompute.recompute_all()
    print(f"TOTAL {time.perf_counter() - start:.1f}s rows {rows}")
    for label in sorted(TOTAL, key=TOTAL.get, reverse=True):
        print(f"{TOTAL[label]:8.1f}s {CALLS[label]:6d} {label}")


if __name__ == "__main__":
    main()
