"""The Content-Security-Policy in a real browser: Django's admin (every change list and
form, and the change list's own inline <style>) and the Swagger UI at /api/docs/ work
with nothing blocked. Chromium reports each blocked script or style as a
``securitypolicyviolation`` event, collected here."""

import pytest
from django.contrib import admin as django_admin
from django.urls import reverse

from funnel.models import Channel, Deal
from tests.funnel.test_admin import one_of_each  # noqa: F401 (a row of every admin model)

REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI} ${e.sample}`);
});
"""


@pytest.fixture
def violations(page):
    """The CSP violations of every page the test opens: (url, message)."""
    found = []
    page.add_init_script(REPORT_VIOLATIONS)
    page.on(
        "console",
        lambda message: (
            found.append((page.url, message.text))
            if message.text.startswith("CSP violation")
            else None
        ),
    )
    return found


def test_the_detector_sees_a_blocked_inline_style(page, sign_in, rep, violations):
    sign_in(rep)
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color: red\">x</p>')")
    page.wait_for_timeout(200)
    assert [message.split()[2] for _url, message in violations] == ["style-src-attr"]


def test_every_admin_page_runs_under_the_policy(
    page,
    sign_in,
    admin,
    violations,
    one_of_each,  # noqa: F811
    monkeypatch,
):
    # The change list's inline <style> shows when neither action bar does.
    channels = django_admin.site._registry[Channel]
    monkeypatch.setattr(channels, "actions_on_top", False)
    monkeypatch.setattr(channels, "actions_on_bottom", False)
    sign_in(admin)
    urls = [reverse("admin:index")]
    for model in django_admin.site._registry:
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        urls.append(reverse(f"{name}_changelist"))
        first = model._default_manager.order_by("pk").first()
        if first is not None:  # rows seeded by migrations are gone after a flush
            urls.append(reverse(f"{name}_change", args=[first.pk]))
    urls.append(reverse("admin:funnel_deal_changelist") + "?q=deal&stage__exact=negotiation")

    for url in urls:
        response = page.goto(url)
        assert response.status == 200, url
        page.wait_for_load_state("networkidle")

    page.goto(reverse("admin:funnel_channel_changelist"))
    assert page.locator("#changelist").count() == 1
    assert page.locator("#changelist-form").count() == 1
    # The sidebar's collapse and the deal search run Django's admin scripts.
    page.goto(reverse("admin:funnel_deal_changelist"))
    page.fill("#searchbar", "Won")
    page.click("#changelist-search [type=submit]")
    page.wait_for_load_state()
    assert (
        page.locator("#result_list tbody tr").count()
        == Deal.objects.filter(title__icontains="Won").count()
    )
    assert violations == []


def test_the_api_docs_run_under_the_policy(page, sign_in, rep, violations):
    sign_in(rep)
    page.goto("/api/docs/")
    page.wait_for_selector(".opblock")
    operations = page.locator(".opblock")
    assert operations.count() > 40
    deals = page.locator(".opblock-get:has([data-path='/api/v1/deals/'])").first
    deals.locator(".opblock-summary").click()
    deals.get_by_role("button", name="Try it out").click()
    deals.get_by_role("button", name="Execute").click()
    status = deals.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"
    assert violations == []
