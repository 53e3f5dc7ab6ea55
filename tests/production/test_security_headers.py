"""Security headers on real responses, and templates the Content-Security-Policy can
serve: no inline script, no event-handler attributes, no inline style."""

import base64
import hashlib
import re
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib import admin as django_admin
from django.urls import reverse

from funnel.models import Channel

pytestmark = pytest.mark.django_db


def _csp(response):
    return {
        part.split()[0]: part.split()[1:]
        for part in response["Content-Security-Policy"].split(";")
        if part.strip()
    }


@pytest.mark.parametrize("path", ["/accounts/login/", "/healthz"])
def test_anonymous_pages_carry_the_security_headers(client, path):
    response = client.get(path)

    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_the_policy_allows_our_own_origin_and_nothing_inline(client, rep):
    client.force_login(rep)
    response = client.get("/")

    assert response.status_code == 200
    assert _csp(response) == {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert "unsafe-eval" not in response["Content-Security-Policy"]


@pytest.mark.parametrize(
    "path",
    ["/", "/deals/list/", "/deals/new/", "/reports/", "/accounts/password/", "/api/docs/"],
)
def test_our_pages_allow_nothing_inline(client, rep, path):
    client.force_login(rep)
    response = client.get(path)

    assert response.status_code == 200
    policy = _csp(response)
    assert (policy["script-src"], policy["style-src"]) == (["'self'"], ["'self'"])
    assert "sha256-" not in response["Content-Security-Policy"]


def _style_hash(css):
    return "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"


def test_the_admin_allows_djangos_change_list_style_by_its_hash_and_nothing_else(
    admin_client, monkeypatch
):
    """Django's change list has one inline <style> when neither action bar is shown: the
    admin's policy names exactly that block, so a Django upgrade that changes it fails
    here rather than in an administrator's browser."""
    model_admin = django_admin.site._registry[Channel]
    monkeypatch.setattr(model_admin, "actions_on_top", False)
    monkeypatch.setattr(model_admin, "actions_on_bottom", False)

    response = admin_client.get(reverse("admin:funnel_channel_changelist"))

    assert response.status_code == 200
    [css] = re.findall(r"<style>(.*?)</style>", response.content.decode(), re.S)
    policy = _csp(response)
    assert policy["style-src"] == ["'self'", _style_hash(css)]
    assert policy["script-src"] == ["'self'"]
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    # Every admin page has the same policy, whatever it shows.
    index = admin_client.get(reverse("admin:index"))
    assert index["Content-Security-Policy"] == response["Content-Security-Policy"]


def test_the_vendored_front_end_is_served_from_our_origin():
    """Bootstrap and Chart.js are static files of ours, so 'self' covers them."""
    static = Path(settings.BASE_DIR) / "static" / "vendor"
    assert (static / "bootstrap" / "bootstrap.min.css").is_file()
    assert (static / "bootstrap" / "bootstrap.bundle.min.js").is_file()
    assert (static / "chartjs" / "chart.umd.min.js").is_file()


# Templates ------------------------------------------------------------------------------

_SCRIPT = re.compile(r"<script\b(?P<attrs>[^>]*)>(?P<body>.*?)</script\s*>", re.I | re.S)
_TAG = re.compile(r"<[a-zA-Z][^<>]*>", re.S)
_EVENT_ATTR = re.compile(r"\son[a-z]+\s*=", re.I)
_STYLE_ATTR = re.compile(r"\sstyle\s*=", re.I)
_STYLE_BLOCK = re.compile(r"<style\b", re.I)
_JS_URL = re.compile(r"""=\s*["']?\s*javascript:""", re.I)
# Data for scripts is fine: it does not run.
_DATA_SCRIPT = re.compile(r"""type\s*=\s*["']application/(ld\+)?json["']""", re.I)


def inline_code(text):
    """What in a template a CSP without 'unsafe-inline' would block: (line, finding)."""
    found = []

    def line(pos):
        return text.count("\n", 0, pos) + 1

    for match in _SCRIPT.finditer(text):
        if match.group("body").strip() and not _DATA_SCRIPT.search(match.group("attrs")):
            found.append((line(match.start()), "inline <script> code"))
    for match in _STYLE_BLOCK.finditer(text):
        found.append((line(match.start()), "<style> block"))
    for match in _TAG.finditer(text):
        tag = match.group(0)
        if _EVENT_ATTR.search(tag):
            found.append((line(match.start()), "event-handler attribute (on...=)"))
        if _STYLE_ATTR.search(tag):
            found.append((line(match.start()), "style= attribute"))
        if _JS_URL.search(tag):
            found.append((line(match.start()), "javascript: URL"))
    return sorted(found)


def project_template_dirs():
    """templates/ and every project app's templates/ (Django's own and third-party
    apps, the admin's included, are outside the project and not scanned)."""
    base = Path(settings.BASE_DIR).resolve()
    venv = base / ".venv"
    dirs = [Path(d).resolve() for d in settings.TEMPLATES[0]["DIRS"]]
    for config in apps.get_app_configs():
        path = Path(config.path).resolve()
        if path.is_relative_to(base) and not path.is_relative_to(venv):
            dirs.append(path / "templates")
    return [d for d in dirs if d.is_dir()]


def project_templates():
    return sorted({p for d in project_template_dirs() for p in d.rglob("*.html")})


def test_the_scan_covers_the_project_templates():
    names = {p.relative_to(settings.BASE_DIR).as_posix() for p in project_templates()}
    assert {
        "templates/base.html",
        "templates/registration/login.html",
        "templates/registration/lockout.html",
    } <= names
    assert not any("site-packages" in name for name in names)


def test_no_template_has_inline_script_or_style():
    offences = [
        f"{path.relative_to(settings.BASE_DIR)}:{line}: {what}"
        for path in project_templates()
        for line, what in inline_code(path.read_text(encoding="utf-8"))
    ]
    assert offences == [], (
        "The Content-Security-Policy blocks inline code: move it to static/js or "
        "static/css (data through json_script or data- attributes):\n" + "\n".join(offences)
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<script src=\"{% static 'js/deal.js' %}\" defer></script>", []),
        ("<script>\n  alert(1)\n</script>", [(1, "inline <script> code")]),
        ('<script type="module">import x from "/x.js"</script>', [(1, "inline <script> code")]),
        ('<script type="application/json" id="d">{"a": 1}</script>', []),
        ('<p>\n<button onclick="go()">Go</button>', [(2, "event-handler attribute (on...=)")]),
        ('<input\n  type="text" ONCHANGE="x()">', [(1, "event-handler attribute (on...=)")]),
        ('<div style="color: red">', [(1, "style= attribute")]),
        ("<style>p { color: red }</style>", [(1, "<style> block")]),
        ('<a href="javascript:void(0)">x</a>', [(1, "javascript: URL")]),
        ('<a href="/on=1" class="online" data-style="x">{{ onion }}</a>', []),
        ("<p>Click on = here, style = plain text</p>", []),
    ],
)
def test_the_scan_finds_inline_code(text, expected):
    assert inline_code(text) == expected
