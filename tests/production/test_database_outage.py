"""A database that does not answer: every request that needs it gets a 503 with a short
message (plain text on the web, JSON under the API), nothing about the failure in the
body, one line in the request log; once the database answers again, the same process
serves normally. tests/faults/test_database_restart.py does the same under gunicorn
with a PostgreSQL stopped and restarted."""

import json
import re

import pytest
from django.db import IntegrityError, ProgrammingError, connections

from funnel import views
from scripts.servers import free_port
from tests.production.conftest import run_python

MESSAGE = "The database is unavailable; try again shortly."
#: What an error page must not show a user: exception names, driver or address details.
LEAKS = re.compile(r"Traceback|OperationalError|psycopg|sqlite|connection|127\.0\.0\.1")

OUTAGE = r"""
import json, time
import django
django.setup()
from django.test import Client
out = {}
web = Client()
web.cookies["sessionid"] = "a" * 32  # a signed-in browser: its session is in the database
api = Client(headers={"Authorization": "Token " + "0" * 40})
for name, client, path in [("web", web, "/deals/"), ("api", api, "/api/v1/deals/")]:
    started = time.monotonic()
    response = client.get(path)
    out[name] = {
        "status": response.status_code,
        "type": response["Content-Type"],
        "retry_after": response.get("Retry-After"),
        "body": response.content.decode(),
        "seconds": time.monotonic() - started,
    }
print(json.dumps(out))
"""


def _outage(env):
    result = run_python(OUTAGE, env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.mark.parametrize(
    "database_url",
    [
        pytest.param("postgres://lejek:secret@127.0.0.1:{port}/lejek", id="postgresql"),
        pytest.param("sqlite:////nonexistent-lejek-dir/lejek.sqlite3", id="sqlite"),
    ],
)
def test_a_request_needing_the_database_answers_503_while_it_is_down(prod_env, database_url):
    answers, log = _outage(
        prod_env(
            DATABASE_URL=database_url.format(port=free_port()),
            SECURE_SSL_REDIRECT="false",
            # No broker is needed for a read; keep the embedded one.
            REDIS_URL=None,
        )
    )

    web, api = answers["web"], answers["api"]
    assert (web["status"], web["type"], web["body"]) == (
        503,
        "text/plain; charset=utf-8",
        MESSAGE,
    )
    assert (api["status"], api["type"], json.loads(api["body"])) == (
        503,
        "application/json",
        {"detail": MESSAGE, "code": "database_unavailable"},
    )
    assert (web["retry_after"], api["retry_after"]) == ("10", "10")
    assert not LEAKS.search(web["body"] + api["body"])
    assert web["seconds"] < 5 and api["seconds"] < 5
    # The error goes to the log, once per request, and the request log says 503 with
    # no user (looking them up is what failed; it is not tried a second time).
    assert log.count("ERROR lejek.database") == 2
    assert re.search(r"user=- method=GET path=/deals/ status=503 ", log), log[-3000:]
    assert re.search(r"user=- method=GET path=/api/v1/deals/ status=503 ", log), log[-3000:]


@pytest.mark.django_db
@pytest.mark.parametrize("error", [ValueError, ProgrammingError, IntegrityError])
def test_other_errors_are_not_turned_into_503(client, rep, monkeypatch, error):
    def broken(*args, **kwargs):
        raise error("a bug, not an outage")

    monkeypatch.setattr(views, "_deals", broken)
    client.raise_request_exception = False
    client.force_login(rep)
    assert client.get("/deals/list/").status_code == 500


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_requests_succeed_again_once_the_database_is_back(on_postgres, client, rep, caplog):
    client.force_login(rep)
    assert client.get("/deals/").status_code == 200
    database = connections["default"]
    port = database.settings_dict["PORT"]
    database.close()
    database.settings_dict["PORT"] = str(free_port())  # nothing listens there
    try:
        down = client.get("/deals/")
        api_down = client.get("/api/v1/deals/")
    finally:
        database.close()
        database.settings_dict["PORT"] = port

    assert (down.status_code, down.content.decode()) == (503, MESSAGE)
    assert api_down.status_code == 503
    assert api_down.json()["code"] == "database_unavailable"
    # The same process, the same session: served again.
    assert client.get("/deals/").status_code == 200
    assert client.get("/api/v1/deals/").status_code == 200
