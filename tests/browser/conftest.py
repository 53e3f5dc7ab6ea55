"""Real Chromium driven by Playwright against Django's live server.

Playwright never downloads a browser here: it launches Debian's Chromium
(``/usr/bin/chromium``, installed by ``make test`` when missing; ``LEJEK_CHROMIUM``
overrides the path). Every test in this folder carries the ``browser`` mark, so the
PostgreSQL pass of ``scripts/run_tests.py`` leaves them to the SQLite pass.
"""

import os
import shutil

import pytest

from tests.conftest import _unavailable
from tests.factories import PASSWORD

# Playwright's sync API runs an event loop in the test thread; the ORM calls the tests
# make around it are ordinary synchronous ones.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium():
    path = os.environ.get("LEJEK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        _unavailable(f"Chromium not found at {path}: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, live_server):
    context = chromium.new_context(base_url=live_server.url, locale="en-GB")
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def sign_in(page):
    """Sign ``user`` in through the real login form."""

    def sign_in(user, password=PASSWORD):
        page.goto("/accounts/login/")
        page.fill("input[name=username]", user.username)
        page.fill("input[name=password]", password)
        page.click("form:has(input[name=password]) [type=submit]")
        page.wait_for_load_state()
        return page

    return sign_in
