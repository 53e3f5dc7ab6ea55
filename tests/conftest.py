"""The fixed cast and the real servers the tests use.

Cast: ``rep`` and ``teammate`` in team A led by ``manager``; ``outsider`` (a rep) in
team B led by ``other_manager``; ``admin``. PostgreSQL runs the whole suite a second
time (scripts/run_tests.py); Redis comes from ``redis_server``.
"""

import importlib
import os

import pytest
from django.apps import apps
from django.core.cache import cache
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import Role
from scripts.servers import RedisServer, ServerUnavailable
from tests.factories import TeamFactory, UserFactory

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason):
    """Outside CI a missing server skips; in CI it fails, never skips."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this test must run)")
    pytest.skip(reason)


@pytest.fixture
def on_postgres(db):
    if connection.vendor != "postgresql":
        _unavailable("needs PostgreSQL: run with DATABASE_URL, as `make test` does")


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server: the one `make test` started, or one of our own."""
    url = os.environ.get("LEJEK_TEST_REDIS_URL")
    if url:
        yield url
        return
    try:
        server = RedisServer().start()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    yield server.url
    server.close()


@pytest.fixture
def team_a(db):
    return TeamFactory(name="Team A")


@pytest.fixture
def team_b(db):
    return TeamFactory(name="Team B")


@pytest.fixture
def manager(team_a):
    user = UserFactory(username="manager", role=Role.MANAGER)
    team_a.manager = user
    team_a.save()
    return user


@pytest.fixture
def other_manager(team_b):
    user = UserFactory(username="other_manager", role=Role.MANAGER)
    team_b.manager = user
    team_b.save()
    return user


@pytest.fixture
def rep(team_a, manager):
    return UserFactory(username="rep", role=Role.REP, team=team_a)


@pytest.fixture
def teammate(team_a, manager):
    return UserFactory(username="teammate", role=Role.REP, team=team_a)


@pytest.fixture
def outsider(team_b, other_manager):
    return UserFactory(username="outsider", role=Role.REP, team=team_b)


@pytest.fixture
def admin(db):
    return UserFactory(username="admin", role=Role.ADMIN, is_staff=True, is_superuser=True)


#: The data migrations whose rows tests may expect (lost reasons, stage settings).
SEEDS = [
    ("funnel.migrations.0002_default_lost_reasons", "add_reasons"),
    ("kpis.migrations.0002_stage_settings", "add_settings"),
]


@pytest.fixture
def seeded_rows(transactional_db):
    """For a test that commits (``transaction=True``, the live server): the rows the
    data migrations seed, which the flush ending an earlier such test removed. Used
    instead of ``serialized_rollback``, whose reload collides with the content types
    that flush recreates under new ids (after any transactional test, e.g. tests/faults)."""
    for module, function in SEEDS:
        getattr(importlib.import_module(module), function)(apps, None)


@pytest.fixture(autouse=True)
def _seed_committing_tests(request):
    """Every test that commits gets ``seeded_rows``, so no test depends on the order the
    transactional tests ran in."""
    marker = request.node.get_closest_marker("django_db")
    commits = marker is not None and (
        marker.kwargs.get("transaction") or (marker.args and marker.args[0])
    )
    if commits or {"transactional_db", "live_server"} & set(request.fixturenames):
        request.getfixturevalue("seeded_rows")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The production hasher is deliberately slow; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def api(db):
    """An API client; ``api.as_user(user)`` signs in with the user's token.

    The throttle counters live in the cache, which outlives a test's database, so the
    cache is cleared around each test that calls the API."""
    client = APIClient()

    def as_user(user):
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    client.as_user = as_user
    cache.clear()
    yield client
    cache.clear()
