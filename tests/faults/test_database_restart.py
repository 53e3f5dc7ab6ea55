"""Database restart while the app serves requests: the production web server (gunicorn,
DEBUG off) on a PostgreSQL cluster of the test's own, answering the API (token auth:
no page templates, so no collectstatic run is needed). While the database is down every
request fails cleanly (503, nothing about the failure in the body, within the connect
timeout) and the probe names the database; once it is back, requests succeed again with
no restart of the app (CONN_HEALTH_CHECKS drops the dead persistent connections)."""

import os
import re
import subprocess
import sys
import time

import pytest
import requests

from scripts.servers import _wait_for_port, free_port

from .conftest import ROOT

TOKEN = "0123456789abcdef0123456789abcdef01234567"
#: What an error page must not show a user: exception names, driver or address details.
LEAKS = re.compile(r"Traceback|OperationalError|psycopg|connection to server|127\.0\.0\.1:\d+")


def manage(env, *args):
    subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def web(postgres_cluster, redis_server, tmp_path):
    """gunicorn with two workers on the cluster, as in production (no TLS on loopback)."""
    env = {
        **os.environ,
        "DATABASE_URL": postgres_cluster.url,
        "REDIS_URL": redis_server,
        "DEBUG": "false",
        "SECRET_KEY": "database-restart-test-key-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "LEJEK_VAR_DIR": str(tmp_path),
        "DATABASE_CONNECT_TIMEOUT": "2",
    }
    manage(env, "migrate", "--noinput", "-v0")
    manage(
        env,
        "shell",
        "-c",
        "from accounts.models import User; from rest_framework.authtoken.models import Token; "
        f"Token.objects.create(key={TOKEN!r}, user=User.objects.create_user('boss', role='admin'))",
    )
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "gunicorn"),
                "config.wsgi",
                f"--bind=127.0.0.1:{port}",
                "--workers=2",
                "--timeout=30",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, timeout=30, proc=proc)
        yield f"http://127.0.0.1:{port}"
        assert proc.poll() is None, "the web server died:\n" + log.read_text()
    finally:
        proc.terminate()
        proc.wait(15)


def api_client():
    session = requests.Session()
    session.headers["Authorization"] = f"Token {TOKEN}"
    return session


@pytest.mark.postgres
def test_requests_fail_cleanly_while_the_database_restarts_and_then_succeed(postgres_cluster, web):
    client = api_client()
    deals = f"{web}/api/v1/deals/"
    # The first request of each worker loads the app: generous timeouts until warm.
    assert client.get(deals, timeout=60).status_code == 200
    # Both gunicorn workers hold a persistent connection (CONN_MAX_AGE) before the stop.
    for _ in range(6):
        response = client.get(deals, timeout=30)
        assert response.status_code == 200
        assert response.json()["results"] == []
    assert requests.get(f"{web}/healthz", timeout=30).json()["status"] == "ok"

    postgres_cluster.stop()
    for _ in range(6):
        started = time.monotonic()
        response = client.get(deals, timeout=30)
        assert time.monotonic() - started < 10
        assert response.status_code == 503, (response.status_code, response.text[:300])
        assert not LEAKS.search(response.text), response.text[:1000]
    health = requests.get(f"{web}/healthz", timeout=30)
    assert health.status_code == 503
    assert health.json()["failing"] == ["database"]

    postgres_cluster.start()
    # The same app processes, the same token: the first request each worker serves
    # after the restart already succeeds.
    for _ in range(6):
        response = client.get(deals, timeout=30)
        assert response.status_code == 200, (response.status_code, response.text[:300])
    assert requests.get(f"{web}/healthz", timeout=30).json()["status"] == "ok"
