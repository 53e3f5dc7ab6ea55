"""The whole test suite, as `make test` runs it.

1. Starts a throw-away PostgreSQL cluster and a redis-server on free loopback ports.
2. Runs the suite on SQLite (the default database), PostgreSQL-only tests deselected.
3. Runs the database tests again on PostgreSQL, PostgreSQL-only tests included.
Exits non-zero if either run fails. Extra arguments are passed on to pytest.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.servers import postgres_server, redis_server  # noqa: E402


def pytest(args, **env):
    cmd = [sys.executable, "-m", "pytest", *args]
    print("\n$", " ".join(f"{k}={v}" for k, v in env.items()), " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, check=False).returncode


def main(extra):
    with postgres_server() as database_url, redis_server() as redis:
        common = {"LEJEK_TEST_REDIS_URL": redis.url}
        sqlite = pytest(["-m", "not postgres", *extra], **common)
        postgres = pytest(["-m", "not browser", *extra], DATABASE_URL=database_url, **common)
    print(f"\nSQLite run: exit {sqlite}; PostgreSQL run: exit {postgres}")
    # pytest exits 5 when it collected nothing: that is a failure of the suite too.
    return 0 if sqlite == postgres == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
