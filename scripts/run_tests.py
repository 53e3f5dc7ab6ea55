"""The whole test suite, as `make test` runs it.

1. Starts a throw-away PostgreSQL cluster and two redis-servers on free loopback ports.
2. Runs the suite on SQLite (the default database), PostgreSQL-only tests deselected,
   and at the same time the database tests again on PostgreSQL, PostgreSQL-only tests
   included: two pytest processes on two cores, each with its own redis-server and its
   own var folder (embedded broker, beat schedule, static files), so neither sees the
   other's messages. The PostgreSQL run streams its output; the SQLite run's output is
   printed when it ends. TEST_PASSES=serial runs them one after the other.
Exits non-zero if either run fails. Extra arguments are passed on to pytest.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.servers import postgres_server, redis_server  # noqa: E402


def command(args, env):
    cmd = [sys.executable, "-m", "pytest", *args]
    print("\n$", " ".join(f"{k}={v}" for k, v in env.items()), " ".join(cmd), flush=True)
    return cmd


def start(args, output=None, **env):
    var = tempfile.mkdtemp(prefix="lejek-test-var-")
    env = {"LEJEK_VAR_DIR": var, **env}
    proc = subprocess.Popen(
        command(args, env),
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
    )
    proc.var = var
    return proc


def finish(proc):
    code = proc.wait()
    shutil.rmtree(proc.var, ignore_errors=True)
    return code


def main(extra):
    serial = os.environ.get("TEST_PASSES", "").lower() == "serial"
    with (
        postgres_server() as database_url,
        redis_server() as redis_sqlite,
        redis_server() as redis_postgres,
        tempfile.TemporaryFile() as log,
    ):
        sqlite_run = start(
            ["-m", "not postgres", "-o", "cache_dir=.pytest_cache/sqlite", *extra],
            None if serial else log,
            LEJEK_TEST_REDIS_URL=redis_sqlite.url,
        )
        if serial:
            sqlite = finish(sqlite_run)
        postgres = finish(
            start(
                ["-m", "not browser", "-o", "cache_dir=.pytest_cache/postgres", *extra],
                DATABASE_URL=database_url,
                LEJEK_TEST_REDIS_URL=redis_postgres.url,
            )
        )
        if not serial:
            sqlite = finish(sqlite_run)
            log.seek(0)
            print("\n--- SQLite run ---", flush=True)
            sys.stdout.buffer.write(log.read())
            sys.stdout.flush()
    print(f"\nSQLite run: exit {sqlite}; PostgreSQL run: exit {postgres}")
    # pytest exits 5 when it collected nothing: that is a failure of the suite too.
    return 0 if sqlite == postgres == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
