"""Each report page runs a fixed number of queries, whatever the number of deals: it
reads stored snapshots, never the deals (a drill-down reads one page of them)."""

import datetime
from decimal import Decimal

import pytest
from django.core.cache import cache

from funnel.stages import Stage, Status
from kpis.recompute import recompute_period
from tests.kpis.builders import deal_row, save_deals
from tests.reports.conftest import FEBRUARY, MARCH, at

pytestmark = pytest.mark.django_db

# Session and user (2), the viewer's teams, people and (admins) channels, the snapshots
# of the trend, the maturity horizon (cached per hour, cold here), "as of", dirty; plus
# the breakdowns, lost reasons or other slices a page shows.
MANAGER_PAGES = {
    "/reports/?period=2026-03": 8,
    "/reports/?period=2026-03&view=cohort": 8,
    "/reports/stage/lead/?period=2026-03": 8,
    "/reports/stage/qualification/?period=2026-03": 9,
    "/reports/stage/needs/?period=2026-03": 8,
    "/reports/stage/offer/?period=2026-03": 8,
    "/reports/stage/negotiation/?period=2026-03": 8,
    "/reports/stage/closing/?period=2026-03": 10,
    "/reports/company/?period=2026-03": 9,
    "/reports/targets/?period=2026-03": 6,
}
ADMIN_EXTRA = {"/reports/stage/lead/?period=2026-03": 2}


def many_deals(owners, n):
    """``n`` deals spread over February and March in every outcome, with snapshots."""
    rows = []
    for i in range(n):
        owner = owners[i % len(owners)]
        lead_at = at(2 + i % 2, 1 + i % 20)
        kind = i % 3
        if kind == 0:
            rows.append(deal_row(owner, lead_at, reached=Stage.NEEDS, segment="SMB"))
        elif kind == 1:
            rows.append(
                deal_row(
                    owner,
                    lead_at,
                    reached=Stage.CLOSING,
                    status=Status.WON,
                    won_at=lead_at + datetime.timedelta(days=3),
                    value=Decimal("1500"),
                )
            )
        else:
            rows.append(deal_row(owner, lead_at, reached=Stage.OFFER, heard_from=f"Source {i}"))
    save_deals(rows)
    recompute_period("month", FEBRUARY.start)
    recompute_period("month", MARCH.start)


def count_queries(client, django_assert_num_queries, url, expected):
    cache.clear()
    with django_assert_num_queries(expected):
        assert client.get(url).status_code == 200


@pytest.mark.parametrize("size", [0, 150])
def test_report_pages_run_a_fixed_number_of_queries(
    client, manager, admin, rep, teammate, dataset, size, django_assert_num_queries
):
    if size:
        many_deals([rep, teammate], size)
    client.force_login(manager)
    for url, expected in MANAGER_PAGES.items():
        count_queries(client, django_assert_num_queries, url, expected)
    client.force_login(admin)
    for url, expected in MANAGER_PAGES.items():
        # Admins read the channels too (and the lead page the per-channel table);
        # they lead no team, so the team list is theirs without a managed-teams query.
        count_queries(client, django_assert_num_queries, url, expected + ADMIN_EXTRA.get(url, 1))


@pytest.mark.parametrize("size", [0, 150])
def test_a_drill_down_page_runs_a_fixed_number_of_queries(
    client, manager, rep, teammate, team_a, dataset, size, django_assert_num_queries
):
    if size:
        many_deals([rep, teammate], size)
    client.force_login(manager)
    url = (
        "/reports/deals/?kpi=leads&grain=month&period=2026-03-01"
        f"&slice=team:{team_a.pk}&side=numerator"
    )
    # Session, user, teams, people, the stored value, the team's members and the owners
    # the manager sees (listed, for the planner), one page of deals (no count).
    with django_assert_num_queries(8):
        response = client.get(url)
    page = response.context["page"]
    assert len(page.object_list) == min(50, 4 + size // 2)
    assert page.total == (None if size else 4)
