"""Real components for the fault-tolerance tests: a redis-server the test may stop and
start again, Celery workers in their own processes (so they can be killed), a
PostgreSQL cluster the test may stop and start again, and the snapshot comparison.

The workers and the test share one database, so the worker tests run on PostgreSQL
(``transaction=True``: the test commits, as the app does). A missing server skips the
tests outside CI and fails them under CI=true (tests/conftest.py, ``_unavailable``).
"""

import contextlib
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from config.celery import app
from kpis.models import KpiSnapshot
from scripts.servers import (
    RedisServer,
    ServerUnavailable,
    _as_postgres_user,
    _wait_for_port,
    free_port,
    postgres_bin,
)
from tests.conftest import _unavailable
from tests.kpis.builders import SNAPSHOT_FIELDS

ROOT = Path(__file__).resolve().parents[2]


def snapshot_rows():
    """Every stored KPI reading, sorted: two equal lists mean two equal stores."""
    return sorted(KpiSnapshot.objects.values_list(*SNAPSHOT_FIELDS))


def wait_until(condition, *, timeout, interval=0.2, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    if not condition():
        pytest.fail(f"{message}: not reached within {timeout} s")


# Redis -----------------------------------------------------------------------------


def production_celery_settings(redis_url):
    """The Celery settings config/settings.py gives a process started with REDIS_URL
    (the tests run without it, on the embedded broker), by Celery's lower-case names."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_URL", redis_url)
        namespace = runpy.run_path(str(ROOT / "config" / "settings.py"))
    return {
        name[len("CELERY_") :].lower(): value
        for name, value in namespace.items()
        if name.startswith("CELERY_")
    }


@pytest.fixture
def broker():
    """A redis-server of this test's own (the suite's shared one must not be stopped),
    with the project's Celery app publishing to it with the broker settings production
    uses (short socket timeouts, connection retries)."""
    try:
        server = RedisServer().start()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    production = production_celery_settings(server.url)
    names = [name for name in production if name.startswith("broker_")]
    previous = {name: app.conf[name] for name in names}
    app.conf.update({name: production[name] for name in names}, broker_url=server.url)
    _forget_broker_connections()
    try:
        yield server
    finally:
        app.conf.update(previous)
        _forget_broker_connections()
        server.close()


def _forget_broker_connections():
    # Drop (without closing: kombu's registry would hand the closed pool back) the
    # connection pools made for the previous broker, as tests/kpis/test_freshness.py does.
    app._pool = None
    app.amqp._producer_pool = None


# Celery workers in their own processes ------------------------------------------------

# Runs a worker of the project's Celery app; FAULTS_VISIBILITY_TIMEOUT, when set,
# shortens the Redis visibility timeout so that the messages of a killed worker are
# handed to the next one within the test instead of after an hour.
WORKER_MAIN = """
import os, sys
from config.celery import app
timeout = os.environ.get("FAULTS_VISIBILITY_TIMEOUT")
if timeout:
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options, "visibility_timeout": float(timeout)
    }
app.worker_main(sys.argv[1:])
"""


def database_url():
    """The URL of the test database this process uses, for a worker process."""
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class WorkerProcess:
    """``celery worker`` (prefork, one child) in its own process group, its log in a
    file the test reads."""

    def __init__(self, name, redis_url, **env):
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"lejek-{name}-", suffix=".log")[1])
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": redis_url,
            "LEJEK_VAR_DIR": tempfile.mkdtemp(prefix=f"lejek-{name}-var-"),
            **env,
        }
        self.proc = None

    def start(self):
        args = [
            sys.executable,
            "-c",
            WORKER_MAIN,
            "worker",
            "--pool=prefork",
            "--concurrency=1",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname={self.name}@%h",
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: SIGKILL takes the children
            )
        self.wait_for_log(" ready.", timeout=40)
        return self

    @property
    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text, *, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return
            if self.proc.poll() is not None:
                pytest.fail(f"worker {self.name} exited ({self.proc.returncode}):\n{self.log}")
            time.sleep(0.05)
        pytest.fail(f"worker {self.name} did not log {text!r} within {timeout} s:\n{self.log}")

    def kill(self):
        """SIGKILL the worker and its pool children at once: no warm shutdown, no
        acknowledgement, no requeue."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(OSError):
            self.log_path.unlink()
        shutil.rmtree(self.env["LEJEK_VAR_DIR"], ignore_errors=True)


@pytest.fixture
def start_worker_process(on_postgres):
    """Start Celery workers in their own processes against this test's database; all
    are stopped after the test (before pytest-django empties the database)."""
    started = []

    def start(name, redis_url, **env):
        worker = WorkerProcess(name, redis_url, **env)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


# PostgreSQL that a test may stop -------------------------------------------------------


class PostgresCluster:
    """A throw-away PostgreSQL cluster, like scripts/servers.postgres_server, that can be
    stopped and started again on the same port and data directory."""

    def __init__(self):
        self.initdb, self.pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
        self.root = tempfile.mkdtemp(prefix="lejek-faults-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        _, account = _as_postgres_user([])
        if account is not None:
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self._run(
            self.initdb,
            "-D",
            self.data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    @property
    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd, check=True):
        cmd, _ = _as_postgres_user(list(cmd))
        subprocess.run(cmd, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self):
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            self.pg_ctl,
            "-D",
            self.data,
            "-o",
            options,
            "-l",
            os.path.join(self.root, "log"),
            "-w",
            "start",
        )
        _wait_for_port(self.port)

    def stop(self, mode="fast"):
        """``fast`` disconnects every client, as a restart by an operator does."""
        self._run(self.pg_ctl, "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def close(self):
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postgres_cluster():
    try:
        cluster = PostgresCluster()
        cluster.start()
    except (ServerUnavailable, subprocess.CalledProcessError) as exc:
        _unavailable(f"cannot start PostgreSQL: {exc}")
    try:
        yield cluster
    finally:
        cluster.close()


def store_difference(actual, expected, limit=12):
    """A readable account of how two snapshot stores (``snapshot_rows()``) differ."""
    key = len(SNAPSHOT_FIELDS) - 3
    actual_by_key = {row[:key]: row[key:] for row in actual}
    expected_by_key = {row[:key]: row[key:] for row in expected}
    missing = sorted(set(expected_by_key) - set(actual_by_key))
    extra = sorted(set(actual_by_key) - set(expected_by_key))
    changed = sorted(
        k
        for k in set(actual_by_key) & set(expected_by_key)
        if actual_by_key[k] != expected_by_key[k]
    )
    lines = [f"{len(missing)} rows missing, {len(extra)} extra, {len(changed)} different"]
    by_kpi = Counter(k[0] for k in [*missing, *extra, *changed])
    lines.append("  by KPI: " + ", ".join(f"{kpi} {n}" for kpi, n in sorted(by_kpi.items())))
    by_grain = Counter(k[1] for k in [*missing, *extra, *changed])
    lines.append("  by grain: " + ", ".join(f"{g} {n}" for g, n in sorted(by_grain.items())))
    readings = Counter(expected_by_key[k] for k in missing)
    lines.append(
        "  missing readings: " + ", ".join(f"{r} x{n}" for r, n in readings.most_common(8))
    )
    lines += [f"  missing {k}: {expected_by_key[k]}" for k in missing[:limit]]
    lines += [f"  extra {k}: {actual_by_key[k]}" for k in extra[:limit]]
    lines += [
        f"  different {k}: {actual_by_key[k]} instead of {expected_by_key[k]}"
        for k in changed[:limit]
    ]
    return "\n".join(lines)
