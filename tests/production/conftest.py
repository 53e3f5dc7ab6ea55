"""Production settings are read once, at start-up, from the environment: tests of them
start a fresh Python process with the production variables (DEBUG off)."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Variables of the test run that must not leak into a "production" process.
_TEST_ONLY = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_TASK_ALWAYS_EAGER",
    "SECURE_SSL_REDIRECT",
    "SECURE_PROXY_SSL_HEADER",
    "CLIENT_IP_HEADER",
    # Set for Playwright's event loop in the browser tests (tests/browser/conftest.py).
    "DJANGO_ALLOW_ASYNC_UNSAFE",
)


def production_env(tmp_path, **overrides):
    """The environment of a production process: DEBUG off, a long random SECRET_KEY,
    ALLOWED_HOSTS, SQLite and the embedded broker in ``tmp_path``. An override of None
    removes the variable."""
    env = {k: v for k, v in os.environ.items() if k not in _TEST_ONLY}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": "testserver,crm.example.com",
            "LEJEK_VAR_DIR": str(tmp_path),
        }
    )
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_python(code, env, timeout=120):
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_json(code, env, timeout=120):
    """Run ``code`` (which prints one JSON document last) and return that document."""
    result = run_python(code, env, timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def prod_env(tmp_path):
    return lambda **overrides: production_env(tmp_path, **overrides)
