"""/healthz: 200 when the database and the broker answer, 503 naming the one that does
not, quickly either way. Real servers: a redis-server running and one stopped, and a
PostgreSQL address nobody listens on."""

import json
import time

import pytest

from scripts.servers import RedisServer, free_port
from tests.production.conftest import run_json

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


def test_both_answer(client, settings, redis_server):
    settings.CELERY_BROKER_URL = redis_server

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "failing": [],
        "database": "ok",
        "broker": "ok",
    }
    assert "no-cache" in response["Cache-Control"]


@pytest.fixture
def stopped_redis():
    server = RedisServer().start()
    server.stop()
    yield server.url
    server.close()


def test_a_stopped_broker_is_named(client, settings, stopped_redis):
    settings.CELERY_BROKER_URL = stopped_redis

    started = time.monotonic()
    response = client.get("/healthz")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "failing": ["broker"],
        "database": "ok",
        "broker": "unavailable",
    }
    assert elapsed < 5


def test_the_broker_answers_again_once_restarted(client, settings):
    server = RedisServer().start()
    try:
        settings.CELERY_BROKER_URL = server.url
        server.stop()
        down = client.get("/healthz")
        server.start()
        up = client.get("/healthz")
    finally:
        server.close()

    assert (down.status_code, down.json()["failing"]) == (503, ["broker"])
    assert (up.status_code, up.json()["failing"]) == (200, [])


def test_no_sign_in_is_needed_and_nothing_else_is_said(client, settings, redis_server):
    settings.CELERY_BROKER_URL = redis_server

    response = client.get("/healthz")

    assert set(response.json()) == {"status", "failing", "database", "broker"}
    assert client.post("/healthz").status_code == 405


HEALTH = r"""
import json, time
import django
django.setup()
from django.test import Client
started = time.monotonic()
response = Client().get("/healthz")
print(json.dumps({"status": response.status_code, "body": json.loads(response.content),
                  "seconds": time.monotonic() - started}))
"""


def test_a_database_that_does_not_answer_is_named(prod_env, redis_server):
    """A production process whose PostgreSQL is down (nothing listens on its port)."""
    port = free_port()
    result = run_json(
        HEALTH,
        prod_env(
            DATABASE_URL=f"postgres://lejek:secret@127.0.0.1:{port}/lejek",
            REDIS_URL=redis_server,
            SECURE_SSL_REDIRECT="false",
        ),
    )

    assert result["status"] == 503
    assert result["body"] == {
        "status": "unavailable",
        "failing": ["database"],
        "database": "unavailable",
        "broker": "ok",
    }
    assert result["seconds"] < 5


def test_both_down_names_both(prod_env, stopped_redis):
    port = free_port()
    result = run_json(
        HEALTH,
        prod_env(
            DATABASE_URL=f"postgres://lejek:secret@127.0.0.1:{port}/lejek",
            REDIS_URL=stopped_redis,
            SECURE_SSL_REDIRECT="false",
        ),
    )

    assert (result["status"], result["body"]["failing"]) == (503, ["database", "broker"])
    assert json.dumps(result["body"]).count("unavailable") == 3
