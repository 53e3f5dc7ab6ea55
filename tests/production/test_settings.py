"""Production settings: DEBUG off unless asked, no silent defaults for SECRET_KEY and
ALLOWED_HOSTS, and `check --deploy` clean (pitfalls.md, "Deployment")."""

import pytest

from tests.production.conftest import ROOT, run_json, run_python

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

# The production entry point: gunicorn imports config.wsgi.
IMPORT_WSGI = "import config.wsgi"


def test_the_wsgi_app_starts_with_the_production_variables(prod_env):
    result = run_python(
        IMPORT_WSGI + "; from django.conf import settings; print(settings.DEBUG)",
        prod_env(DEBUG=None),
    )

    assert result.returncode == 0, result.stderr
    # DEBUG unset: off.
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("SECRET_KEY", "SECRET_KEY must be set when DEBUG is off."),
        ("ALLOWED_HOSTS", "ALLOWED_HOSTS must be set when DEBUG is off."),
    ],
)
@pytest.mark.parametrize("debug", [None, "false"], ids=["debug-unset", "debug-false"])
def test_a_missing_secret_key_or_allowed_hosts_stops_start_up(prod_env, missing, message, debug):
    result = run_python(IMPORT_WSGI, prod_env(DEBUG=debug, **{missing: None}))

    assert result.returncode == 1
    assert f"django.core.exceptions.ImproperlyConfigured: {message}" in result.stderr


def test_an_empty_secret_key_is_missing_too(prod_env):
    result = run_python(IMPORT_WSGI, prod_env(SECRET_KEY=""))

    assert result.returncode == 1
    assert "SECRET_KEY must be set when DEBUG is off." in result.stderr


def test_development_mode_needs_neither(prod_env):
    result = run_python(
        IMPORT_WSGI + "; from django.conf import settings; print(settings.ALLOWED_HOSTS)",
        prod_env(DEBUG="true", SECRET_KEY=None, ALLOWED_HOSTS=None),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['127.0.0.1', 'localhost']"


def test_a_malformed_proxy_ssl_header_stops_start_up(prod_env):
    result = run_python(IMPORT_WSGI, prod_env(SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO"))

    assert result.returncode == 1
    assert "SECURE_PROXY_SSL_HEADER is the header and its https value" in result.stderr


def _check_deploy(env):
    return run_python(
        "import sys; sys.argv = ['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'];"
        "from django.core.management import execute_from_command_line;"
        "execute_from_command_line(sys.argv)",
        env,
    )


def test_check_deploy_passes_under_the_production_variables(prod_env):
    result = _check_deploy(prod_env())

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_passes_on_postgres_and_redis_urls_too(prod_env):
    # `check` does not connect: the URLs only have to be well-formed.
    result = _check_deploy(
        prod_env(
            DATABASE_URL="postgres://lejek:secret@db.internal:5432/lejek",
            REDIS_URL="redis://redis.internal:6379/0",
        )
    )

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("weakened", "check_id"),
    [
        ({"SECURE_HSTS_SECONDS": "0"}, "security.W004"),
        ({"SECURE_SSL_REDIRECT": "false"}, "security.W008"),
        ({"SESSION_COOKIE_SECURE": "false"}, "security.W012"),
        ({"SECRET_KEY": "short"}, "security.W009"),
    ],
)
def test_check_deploy_fails_when_a_protection_is_turned_off(prod_env, weakened, check_id):
    """The check is live: switching one protection off makes it fail."""
    result = _check_deploy(prod_env(**weakened))

    assert result.returncode == 1
    assert check_id in result.stderr


def test_manage_py_stays_in_development_mode_unless_told(prod_env):
    result = run_python(
        "import runpy, sys; sys.argv = ['manage.py', 'shell', '-c', "
        "'from django.conf import settings; print(settings.DEBUG)'];"
        f"runpy.run_path({str(ROOT / 'manage.py')!r}, run_name='__main__')",
        prod_env(DEBUG=None, SECRET_KEY=None, ALLOWED_HOSTS=None),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"


#: A production process answering a few requests through Django's test client, on its
#: own SQLite database: what a browser would see from the real settings.
RESPONSES = r"""
import json
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
call_command("collectstatic", interactive=False, verbosity=0)  # as `make serve` does
from django.test import Client
from tests.factories import PASSWORD, UserFactory

UserFactory(username="ola")

def cookie(response, name):
    morsel = response.cookies.get(name)
    if morsel is None:
        return None
    return {"secure": bool(morsel["secure"]), "httponly": bool(morsel["httponly"]),
            "samesite": morsel["samesite"]}

out = {}
client = Client()
plain = client.get("/accounts/login/")
out["plain"] = {"status": plain.status_code, "location": plain.get("Location")}
health = client.get("/healthz")
out["plain_health"] = {"status": health.status_code}
secure = client.get("/accounts/login/", secure=True)
out["secure"] = {
    "status": secure.status_code,
    "hsts": secure.get("Strict-Transport-Security"),
    "csp": secure.get("Content-Security-Policy"),
    "frame": secure.get("X-Frame-Options"),
    "referrer": secure.get("Referrer-Policy"),
    "nosniff": secure.get("X-Content-Type-Options"),
    "csrf_cookie": cookie(secure, "csrftoken"),
}
login = client.post("/accounts/login/", {"username": "ola", "password": PASSWORD}, secure=True)
out["login"] = {"status": login.status_code, "session_cookie": cookie(login, "sessionid")}
proxied = Client().get("/accounts/login/", headers={"X-Forwarded-Proto": "https"})
out["proxied"] = {"status": proxied.status_code, "location": proxied.get("Location")}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def responses(tmp_path_factory):
    from tests.production.conftest import production_env

    tmp = tmp_path_factory.mktemp("production")
    return run_json(
        RESPONSES,
        production_env(tmp, SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https"),
        timeout=300,
    )


def test_plain_http_is_redirected_to_https(responses):
    assert responses["plain"] == {"status": 301, "location": "https://testserver/accounts/login/"}


def test_the_health_check_answers_over_plain_http_for_the_load_balancer(responses):
    assert responses["plain_health"] == {"status": 200}


def test_behind_the_proxy_its_https_header_counts_as_https(responses):
    assert responses["proxied"] == {"status": 200, "location": None}


def test_https_responses_carry_hsts_and_the_security_headers(responses):
    secure = responses["secure"]
    assert secure["status"] == 200
    assert secure["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert secure["frame"] == "DENY"
    assert secure["referrer"] == "same-origin"
    assert secure["nosniff"] == "nosniff"
    assert "'unsafe-inline'" not in secure["csp"]
    assert "script-src 'self'" in secure["csp"]


def test_cookies_are_secure(responses):
    assert responses["secure"]["csrf_cookie"] == {
        "secure": True,
        "httponly": False,  # the form reads it from the page, not from JavaScript
        "samesite": "Lax",
    }
    assert responses["login"]["status"] == 302
    assert responses["login"]["session_cookie"] == {
        "secure": True,
        "httponly": True,
        "samesite": "Lax",
    }
