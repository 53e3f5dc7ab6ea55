"""Import speed: rows per second of funnel/importing.py on a generated deals CSV.

    .venv/bin/python scripts/bench_import.py
    BENCH_IMPORT_ROWS=20000 .venv/bin/python scripts/bench_import.py
    DATABASE_URL=postgres://user:pass@127.0.0.1:5432/lejek .venv/bin/python scripts/bench_import.py

Writes a synthetic deals file (BENCH_IMPORT_ROWS rows, default 100,000; deterministic)
covering every stage and outcome, then imports it through ``importing.import_deals``
exactly as the command does, minus the KPI recompute (timed separately when
BENCH_IMPORT_RECOMPUTE=1). It runs against the database DATABASE_URL names (SQLite by
default), in a throw-away test database created beside it (``test_<name>``, or a
temporary SQLite file) and dropped afterwards: the real data is never touched.
"""

import csv
import datetime
import os
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Like manage.py: a local tool runs in development mode unless told otherwise.
os.environ.setdefault("DEBUG", "true")

ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "100000"))
RECOMPUTE = os.environ.get("BENCH_IMPORT_RECOMPUTE", "") in ("1", "true", "yes")
SEED = 20250101
OWNERS = [f"bench.rep{i}" for i in range(1, 13)]
CHANNELS = ["Web", "Referral", "Trade fair", "LinkedIn", "Cold call"]
INDUSTRIES = ["Manufacturing", "Retail", "IT", "Logistics", "Healthcare"]
SEGMENTS = ["SMB", "Mid-market", "Enterprise"]
REASONS = ["price", "competitor", "no_budget", "timing", "no_response"]
#: Where a generated deal ends: (last stage index 0..5, outcome), with weights.
ENDINGS = [
    ((0, "open"), 22),
    ((1, "open"), 12),
    ((2, "open"), 10),
    ((3, "open"), 8),
    ((4, "open"), 6),
    ((5, "open"), 3),
    ((5, "won"), 17),
    ((1, "lost"), 8),
    ((2, "lost"), 5),
    ((3, "lost"), 5),
    ((4, "lost"), 4),
]
STAMPS = ["lead_at", "qualification_at", "needs_at", "offer_at", "negotiation_at", "closing_at"]
STAGES = ["lead", "qualification", "needs", "offer", "negotiation", "closing"]


def generate(path, rows):
    """A deals CSV of ``rows`` rows in the import format."""
    from funnel.importing import DEAL_COLUMNS

    rng = random.Random(SEED)
    endings, weights = zip(*ENDINGS, strict=True)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    start = now - datetime.timedelta(days=730)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=DEAL_COLUMNS)
        writer.writeheader()
        for n in range(rows):
            (last, outcome) = rng.choices(endings, weights)[0]
            value = Decimal(rng.randrange(1_000, 200_000))
            moment = start + datetime.timedelta(minutes=rng.randrange(0, 600 * 24 * 60))
            row = dict.fromkeys(DEAL_COLUMNS, "")
            row.update(
                external_id=f"bench-{n}",
                title=f"Deal {n}",
                company=f"Company {rng.randrange(rows // 4 + 1)}",
                industry=rng.choice(INDUSTRIES),
                segment=rng.choice(SEGMENTS),
                channel=rng.choice(CHANNELS),
                owner=rng.choice(OWNERS),
                currency="PLN",
                estimated_value=str(value),
                first_touch_at=(moment - datetime.timedelta(days=rng.randrange(0, 20))).isoformat(),
                status=outcome,
                stage=STAGES[last],
            )
            for i in range(last + 1):
                if i:
                    moment += datetime.timedelta(hours=rng.randrange(2, 24 * 14))
                row[STAMPS[i]] = moment.isoformat()
            if last >= 3:
                offer_sent = datetime.datetime.fromisoformat(row["offer_at"]) + datetime.timedelta(
                    hours=1
                )
                if last >= 4:
                    # Sent before negotiation began (its stamp is at least 2 hours later).
                    row.update(offer_value=str(value), offer_sent_at=offer_sent.isoformat())
                    row["offer_status"] = "sent"
                else:
                    row.update(offer_value=str(value), offer_status="draft")
            if last >= 4:
                row["negotiation_rounds"] = str(rng.randrange(0, 3))
            if last == 5:
                agreed = (value * Decimal("0.9")).quantize(Decimal("0.01"))
                row.update(agreed_value=str(agreed), discount_pct="10")
                if outcome == "won":
                    won = moment + datetime.timedelta(days=rng.randrange(1, 10))
                    row.update(
                        document_type=rng.choice(["contract", "proforma"]),
                        final_value=str(agreed),
                        won_at=min(won, now).isoformat(),
                    )
            if outcome == "lost":
                lost = moment + datetime.timedelta(days=rng.randrange(1, 10))
                row.update(
                    lost_at=min(lost, now).isoformat(),
                    lost_reason=rng.choice(REASONS),
                    lost_stage=STAGES[last],
                )
            writer.writerow(row)


def main():
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    from funnel import importing

    vendor = connection.vendor
    tmp = Path(tempfile.mkdtemp(prefix="lejek-bench-import-"))
    if vendor == "sqlite":
        # A file, not the in-memory default: the speed a real SQLite install sees.
        settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = str(tmp / "bench.sqlite3")
    csv_path = tmp / "deals.csv"
    t0 = time.perf_counter()
    generate(csv_path, ROWS)
    size_mb = csv_path.stat().st_size / 1e6
    print(f"generated {ROWS:,} rows ({size_mb:.1f} MB) in {time.perf_counter() - t0:.1f} s")

    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        print(f"database: {vendor} (throw-away {connection.settings_dict['NAME']})")
        t0 = time.perf_counter()
        result = importing.import_deals(csv_path, create_missing=True)
        elapsed = time.perf_counter() - t0
        for line in importing.report_lines(result, name=csv_path.name)[-6:]:
            print(line if len(line) <= 200 else line[:200] + "...")
        if result.failed:
            print(f"{result.failed} rows failed; first: {result.errors[:3]}")
        print(
            f"import: {ROWS:,} rows in {elapsed:.1f} s = {ROWS / elapsed:,.0f} rows/s "
            f"({result.created:,} created)"
        )
        if RECOMPUTE:
            from kpis.recompute import recompute_all_dirty

            t0 = time.perf_counter()
            days = recompute_all_dirty()
            print(
                f"KPI recompute after import: {days} dirty days in {time.perf_counter() - t0:.1f} s"
            )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        for child in tmp.iterdir():
            child.unlink()
        tmp.rmdir()
    return 0 if result.created == ROWS else 1


if __name__ == "__main__":
    sys.exit(main())
