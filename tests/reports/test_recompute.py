"""'Recompute now' enqueues kpis.recompute_period; the status endpoint tells the page
when fresh numbers are in."""

import pytest
from django.utils import timezone

from kpis.models import KpiSnapshot
from kpis.tasks import recompute_period
from tests.factories import make_deal
from tests.reports.conftest import MARCH, at

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager():
    """Run the real task in the request (no broker in these tests)."""
    conf = recompute_period.app.conf
    before = conf.task_always_eager
    conf.task_always_eager = True
    yield
    conf.task_always_eager = before


def test_recompute_now_computes_the_period_and_status_shows_it(client, manager, rep, eager):
    make_deal(rep, at=at(3, 5))
    client.force_login(manager)
    status = client.get("/reports/status/?grain=month&period=2026-03").json()
    assert status["computed_at"] is None
    assert status["dirty"] is True  # the new lead marked its day
    before = timezone.now()
    response = client.post(
        "/reports/recompute/",
        {"grain": "month", "period": "2026-03"},
        HTTP_ACCEPT="application/json",
    )
    assert response.json()["queued"] is True
    leads = KpiSnapshot.objects.get(
        kpi="leads", grain="month", period_start=MARCH.start, slice="company"
    )
    assert leads.value == 1
    status = client.get("/reports/status/?grain=month&period=2026-03").json()
    assert status["period"] == "2026-03"
    assert status["computed_at"] >= before.isoformat()


def test_recompute_without_javascript_redirects_back(client, admin, eager):
    client.force_login(admin)
    response = client.post(
        "/reports/recompute/",
        {"grain": "month", "period": "2026-03", "next": "/reports/stage/offer/?period=2026-03"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/reports/stage/offer/?period=2026-03"
    evil = client.post(
        "/reports/recompute/", {"grain": "month", "period": "2026-03", "next": "https://evil.test/"}
    )
    assert evil["Location"] == "/reports/"


def test_a_broker_outage_is_reported_not_a_500(client, admin, monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(recompute_period, "delay", down)
    client.force_login(admin)
    response = client.post(
        "/reports/recompute/",
        {"grain": "month", "period": "2026-03"},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 503
    assert response.json()["queued"] is False


def test_status_of_a_bad_period_is_404(client, admin):
    client.force_login(admin)
    assert client.get("/reports/status/?grain=month&period=soon").status_code == 404
    assert client.get("/reports/status/?grain=decade&period=2026").status_code == 404


def test_the_page_shows_when_numbers_are_waiting_for_a_recompute(client, admin):
    from kpis.dirty import mark_days

    mark_days([MARCH.start])
    client.force_login(admin)
    response = client.get("/reports/stage/offer/?period=2026-03")
    assert response.context["dirty"] is True
    assert b'data-testid="dirty"' in response.content
