"""The reports show the stored KPI values of a fixed dataset, exactly."""

import csv
import io
import re
from decimal import Decimal

import pytest
from django.utils import timezone

from funnel.models import Deal
from kpis.drilldown import deals_behind
from kpis.models import KpiSnapshot, Target
from kpis.periods import Period, local_date
from kpis.recompute import recompute_period
from tests.reports.conftest import MARCH

pytestmark = pytest.mark.django_db

OFFER_MARCH = "/reports/stage/offer/?period=2026-03"


def table(response, key):
    return next(t for t in response.context["tables"] if t.key == key)


def kpi_rows(response, key="kpis"):
    return {r.kpi.code: r for r in table(response, key).rows}


def csv_lines(response):
    text = b"".join(response.streaming_content).decode("utf-8").lstrip("\ufeff")
    return list(csv.reader(io.StringIO(text)))


def test_a_manager_sees_the_offer_kpis_of_their_team(client, manager, dataset):
    client.force_login(manager)
    response = client.get(OFFER_MARCH)
    assert response.status_code == 200
    assert response.context["slice_key"] == f"team:{manager.managed_teams.get().pk}"
    rows = kpi_rows(response)
    assert rows["offers_sent"].value == 3
    acceptance = rows["offer_acceptance_pct"]
    assert (acceptance.numerator, acceptance.denominator) == (1, 3)
    assert round(acceptance.value, 4) == Decimal("33.3333")
    assert acceptance.pending == 1
    assert rows["avg_offer_value"].value == Decimal("20000")
    assert round(rows["offer_prep_days"].value, 4) == Decimal("2.6667")
    content = response.content.decode()
    assert "33.3 %" in content
    assert "20,000.00 PLN" in content


def test_filtering_to_one_rep_shows_that_reps_numbers_and_the_change(client, manager, rep, dataset):
    client.force_login(manager)
    response = client.get(f"{OFFER_MARCH}&rep={rep.pk}")
    assert response.context["slice_key"] == f"rep:{rep.pk}"
    acceptance = kpi_rows(response)["offer_acceptance_pct"]
    assert (acceptance.value, acceptance.numerator, acceptance.denominator) == (50, 1, 2)
    # February: one offer, accepted. Acceptance fell by 50 points: a bad change.
    assert acceptance.previous.value == 100
    assert acceptance.delta == -50
    assert acceptance.trend_class == "down bad"
    assert acceptance.delta_display == "−50.0 pp"
    offers = kpi_rows(response)["offers_sent"]
    assert (offers.value, offers.previous.value, offers.trend_class) == (2, 1, "up good")
    assert 'class="delta down bad"' in response.content.decode()


def test_team_and_rep_together_read_the_reps_slice(client, manager, rep, team_a, dataset):
    client.force_login(manager)
    response = client.get(f"{OFFER_MARCH}&team={team_a.pk}&rep={rep.pk}")
    assert response.context["slice_key"] == f"rep:{rep.pk}"


def test_a_rep_outside_the_chosen_team_is_a_form_error(client, admin, rep, team_b, dataset):
    client.force_login(admin)
    response = client.get(f"{OFFER_MARCH}&team={team_b.pk}&rep={rep.pk}")
    assert response.context["form"].errors == {"rep": ["This person is not in the chosen team."]}
    assert response.context["slice_key"] == "company"


def test_a_channel_cannot_be_combined_with_a_rep(client, admin, rep, dataset):
    client.force_login(admin)
    channel = dataset["accepted"].channel
    response = client.get(f"{OFFER_MARCH}&channel={channel.pk}&rep={rep.pk}")
    assert response.context["form"].non_field_errors()[0].startswith("Team and rep narrow")
    assert response.context["slice_key"] == "company"


def test_an_admin_sees_the_whole_company(client, admin, dataset):
    client.force_login(admin)
    rows = kpi_rows(client.get(OFFER_MARCH))
    assert rows["offers_sent"].value == 4
    assert (rows["offer_acceptance_pct"].numerator, rows["offer_acceptance_pct"].denominator) == (
        2,
        4,
    )


def test_the_trend_covers_twelve_periods_ending_with_the_one_shown(client, manager, rep, dataset):
    client.force_login(manager)
    trend = client.get(f"{OFFER_MARCH}&rep={rep.pk}").context["trend"]
    assert trend["labels"][0] == "2025-04"
    assert trend["labels"][-1] == "2026-03"
    offers = next(s for s in trend["series"] if s["code"] == "offers_sent")
    assert offers["values"] == [0.0] * 10 + [1.0, 2.0]


def test_a_trend_range_is_chosen_with_since(client, manager, dataset):
    client.force_login(manager)
    response = client.get(f"{OFFER_MARCH}&since=2026-01")
    assert response.context["trend"]["labels"] == ["2026-01", "2026-02", "2026-03"]


def test_a_bad_period_is_a_clear_form_error(client, manager, dataset):
    client.force_login(manager)
    response = client.get("/reports/stage/offer/?period=March")
    assert response.status_code == 200
    assert response.context["form"].errors == {"period": ["“March” is not a period of this grain."]}


def test_the_funnel_overview_counts_each_stage(client, manager, dataset):
    client.force_login(manager)
    response = client.get("/reports/?period=2026-03&view=cohort")
    rows = {r["stage"].value: r for r in response.context["funnel"].rows}
    # Team A in March: four leads (accepted, rejected, pending, lead only); three reached offer.
    assert rows["lead"]["dropoff"].denominator == 4
    assert rows["offer"]["dropoff"].denominator == 3
    assert rows["offer"]["dropoff"].numerator == 1  # the rejected deal, lost at offer
    assert rows["lead"]["conversion"].numerator == 3
    assert rows["lead"]["conversion"].value == 75
    chart = response.context["chart"]
    assert chart["labels"][0] == "Lead"
    assert chart["datasets"][0]["data"][:4] == [75.0, 100.0, 100.0, 0.0]
    period = client.get("/reports/?period=2026-03").context
    assert period["chart"]["datasets"][0]["data"] == [4.0, 3.0, 3.0, 3.0, 0.0, 0.0]
    # Days in qualification: every stay was one day.
    assert rows["qualification"]["days"].value == 1
    assert rows["qualification"]["median"].value == 1


def test_the_cohort_view_warns_while_the_cohort_is_immature(client, manager, rep):
    client.force_login(manager)
    response = client.get("/reports/?view=cohort")  # the current month
    assert response.context["immature"] is True
    assert b'data-testid="immature-warning"' in response.content
    mature = client.get("/reports/?view=cohort&period=2026-03")
    assert mature.context["immature"] is False


def test_qualification_breakdowns_by_source(client, manager, dataset):
    client.force_login(manager)
    response = client.get("/reports/stage/qualification/?period=2026-03")
    by_source = dict(table(response, "by_source").rows)
    assert set(by_source) == {"Fair", '=HYPERLINK("http://x")', "@SUM(1+1)"}
    leads, quality = by_source["Fair"]
    assert (leads.value, quality.value) == (2, 100)
    leads, quality = by_source["@SUM(1+1)"]
    assert (leads.value, quality.value) == (1, 0)


def test_lost_reasons_by_reason_and_stage(client, manager, dataset):
    client.force_login(manager)
    response = client.get("/reports/stage/closing/?period=2026-03")
    by_reason = table(response, "by_reason").rows
    assert [(label, r[0].value, r[1].value) for label, r in by_reason] == [
        ("Price", 1, Decimal("20000"))
    ]
    by_stage = table(response, "by_stage").rows
    assert [(label, r[0].value) for label, r in by_stage] == [("Offer", 1)]


def test_the_lead_report_lists_channels_for_the_whole_company(client, admin, manager, dataset):
    client.force_login(admin)
    channels = table(client.get("/reports/stage/lead/?period=2026-03"), "channels").rows
    assert [(label, r[0].value) for label, r in channels] == [("Web", 2)]
    client.force_login(manager)
    keys = [t.key for t in client.get("/reports/stage/lead/?period=2026-03").context["tables"]]
    assert "channels" not in keys


def test_the_company_page_shows_target_attainment(client, manager, rep, teammate, dataset):
    Target.objects.create(grain="month", period_start=MARCH.start, rep=rep, amount=20000)
    recompute_period("month", MARCH.start)
    client.force_login(manager)
    response = client.get("/reports/company/?period=2026-03")
    attainment = dict(response.context["attainment"])
    # The accepted offer set agreed terms but nothing was won: 0 of 20,000.
    assert attainment[str(rep)].value == 0
    assert attainment[str(rep)].denominator == 20000
    assert attainment[str(teammate)].value is None
    assert b'<progress max="100" value="0.0"' in response.content


def test_a_now_kpi_has_a_value_only_in_the_period_holding_today(client, admin, dataset):
    """Stalled deals are counted as things stand: a past period shows no value (not
    0), even where a row was stored while it was the current one, and the current
    period's count is not compared with a previous one."""
    this_month = Period.containing("month", local_date(timezone.now()))
    for start, count in ((MARCH.start, 4), (this_month.start, 7)):
        KpiSnapshot.objects.update_or_create(
            kpi="stalled_deals",
            grain="month",
            period_start=start,
            slice="company",
            breakdown="",
            defaults={"value": count, "numerator": count, "extra": {}},
        )
    client.force_login(admin)

    march = kpi_rows(client.get("/reports/company/?period=2026-03"), "pipeline")["stalled_deals"]
    assert (march.value, march.display, march.previous.value, march.delta) == (
        None,
        "—",
        None,
        None,
    )
    now = kpi_rows(client.get("/reports/company/"), "pipeline")["stalled_deals"]
    assert (now.value, now.numerator, now.display) == (7, 7, "7")
    assert (now.previous.value, now.previous.display, now.delta) == (None, "—", None)


def test_every_number_links_to_the_deals_behind_it(client, manager, rep, dataset):
    client.force_login(manager)
    acceptance = kpi_rows(client.get(f"{OFFER_MARCH}&rep={rep.pk}"))["offer_acceptance_pct"]
    numerator = client.get(acceptance.numerator_url)
    assert [d.title for d in numerator.context["page"].object_list] == ["Accepted deal"]
    denominator = client.get(acceptance.denominator_url)
    assert [d.title for d in denominator.context["page"].object_list] == [
        "Rejected deal",
        "Accepted deal",
    ]
    assert b"Deals whose first offer was sent" in denominator.content


def test_each_deal_behind_a_number_links_to_its_page(client, manager, rep, dataset):
    client.force_login(manager)
    acceptance = kpi_rows(client.get(f"{OFFER_MARCH}&rep={rep.pk}"))["offer_acceptance_pct"]
    response = client.get(acceptance.denominator_url)
    rows = re.findall(
        r'<tr data-deal="\d+">\s*<td><a href="([^"]+)">([^<]+)</a></td>',
        response.content.decode(),
    )
    assert rows == [
        (f"/deals/{Deal.objects.get(title=title).pk}/", title)
        for title in ["Rejected deal", "Accepted deal"]
    ]
    # The page it links to opens for the same user.
    assert client.get(rows[0][0]).status_code == 200


def test_the_drill_down_is_paginated(client, admin, rep, dataset):
    from tests.factories import make_deal
    from tests.reports.conftest import at

    for i in range(55):
        make_deal(rep, at=at(3, 21), title=f"Bulk {i}")
    recompute_period("month", MARCH.start)
    client.force_login(admin)
    url = "/reports/deals/?kpi=leads&grain=month&period=2026-03-01&slice=company"
    first = client.get(url)
    assert len(first.context["page"].object_list) == 50
    assert first.context["page"].total is None  # not counted: more follow
    assert b"Deals 1\xe2\x80\x9350, more on the next pages" in first.content
    second = client.get(url + "&page=2")
    assert len(second.context["page"].object_list) == 10
    assert second.context["page"].total == 60  # five March leads and 55 more
    assert b"Deals 51\xe2\x80\x9360 of 60" in second.content
    # Newest lead first, no deal on two pages.
    listed = [*first.context["page"].object_list, *second.context["page"].object_list]
    assert len({d.pk for d in listed}) == 60
    assert [d.entered_lead_at for d in listed] == sorted(
        (d.entered_lead_at for d in listed), reverse=True
    )
    third = client.get(url + "&page=3")
    assert third.context["page"].object_list == []
    assert b"No deals on this page." in third.content


def test_the_drill_down_offers_pages_up_to_the_last_then_the_export(
    client, admin, dataset, monkeypatch
):
    from reports import views

    monkeypatch.setattr(views, "DEALS_PER_PAGE", 2)
    monkeypatch.setattr(views, "MAX_PAGE", 2)
    client.force_login(admin)
    url = "/reports/deals/?kpi=leads&grain=month&period=2026-03-01&slice=company"
    second = client.get(url + "&page=2").context["page"]
    assert (len(second.object_list), second.has_next, second.truncated) == (2, False, True)
    assert second.total is None  # a fifth March lead follows
    # A page past the last offered is the last offered, not a scan of the whole list.
    assert client.get(url + "&page=99999").context["page"].number == 2
    assert b"the CSV export lists them all" in client.get(url + "&page=2").content
    first = client.get(url).context["page"]
    assert (first.has_next, first.truncated) == (True, False)


def test_the_csv_export_is_the_table_as_shown(client, manager, rep, dataset):
    client.force_login(manager)
    response = client.get(f"{OFFER_MARCH}&rep={rep.pk}&export=kpis")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    lines = csv_lines(response)
    assert lines[0] == ["Report", "offer"]
    assert lines[3] == ["Period", "2026-03"]
    header = lines.index(
        [
            "KPI",
            "Code",
            "Period",
            "Value",
            "Previous period",
            "Change",
            "Numerator",
            "Denominator",
            "Immature cohort",
            "Formula",
        ]
    )
    body = {line[1]: line for line in lines[header + 1 :]}
    assert body["offer_acceptance_pct"][3:8] == [
        "50.0000",
        "100.0000",
        "-50.0000",
        "1.0000",
        "2.0000",
    ]
    assert body["offers_sent"][3:6] == ["2", "1", "1"]


def test_csv_cells_that_look_like_formulas_are_neutralised(client, manager, dataset):
    client.force_login(manager)
    response = client.get("/reports/stage/qualification/?period=2026-03&export=by_source")
    firsts = [line[0] for line in csv_lines(response) if line]
    assert '\'=HYPERLINK("http://x")' in firsts
    assert "'@SUM(1+1)" in firsts
    assert "Fair" in firsts
    assert not any(c.startswith(("=", "@", "+", "\t", "\r")) for c in firsts)


def test_neutralise_prefixes_every_formula_start_and_keeps_numbers():
    from reports.exports import neutralise

    for text in ("=1+1", "+1", "-1", "@A1", "\tx", "\rx"):
        assert neutralise(text) == "'" + text
    assert neutralise(Decimal("-5.5")) == Decimal("-5.5")
    assert neutralise("Fair") == "Fair"


def test_the_funnel_export(client, manager, dataset):
    client.force_login(manager)
    lines = csv_lines(client.get("/reports/?period=2026-03&export=funnel"))
    lead = next(line for line in lines if line and line[0] == "Lead")
    assert lead[1:6] == ["4", "3", "75.0000", "0", "0.0000"]


def test_the_drill_down_exports_its_deals(client, manager, rep, dataset):
    client.force_login(manager)
    url = (
        "/reports/deals/?kpi=offer_acceptance_pct&grain=month&period=2026-03-01"
        f"&slice=rep:{rep.pk}&side=denominator&format=csv"
    )
    rows = [line for line in csv_lines(client.get(url)) if len(line) > 2 and line[0].isdigit()]
    assert [row[1] for row in rows] == ["Rejected deal", "Accepted deal"]
    # The pages' order, and the moment that counted each deal (its first offer sent).
    _, denominator = deals_behind(
        "offer_acceptance_pct", Period.parse("month", "2026-03-01"), f"rep:{rep.pk}"
    )
    page = denominator.page(manager, 0, 10)
    assert [int(row[0]) for row in rows] == [deal.pk for deal in page]
    assert [row[-1] for row in rows] == [local_date(deal.counted_at).isoformat() for deal in page]


def test_the_filter_form_shows_the_month_grain_by_default(client, manager, dataset):
    client.force_login(manager)
    content = client.get(OFFER_MARCH).content.decode()
    assert '<option value="month" selected>' in content


def test_a_drill_down_of_two_populations_exports_them_in_the_pages_order(client, manager, rep):
    # Won and lost opportunities: two families merged newest first by the moment of each.
    from funnel import domain
    from funnel.stages import Stage
    from tests.factories import days_ago, deal_in_stage, lost_reason, won_deal

    won = won_deal(rep, start_days_ago=30)  # won three days ago
    lost = deal_in_stage(rep, Stage.NEEDS, start_days_ago=20)
    domain.mark_lost(lost, lost_reason("price"), by=rep, at=days_ago(3, hour=13))
    period = Period.containing("day", local_date(days_ago(3)))
    recompute_period("day", period.start)
    client.force_login(manager)
    url = (
        f"/reports/deals/?kpi=win_rate_pct&grain=day&period={period.start.isoformat()}"
        f"&slice=rep:{rep.pk}&side=denominator&format=csv"
    )
    rows = [line for line in csv_lines(client.get(url)) if len(line) > 2 and line[0].isdigit()]
    _, denominator = deals_behind("win_rate_pct", period, f"rep:{rep.pk}")
    assert len(denominator.parts) == 2
    page = denominator.page(manager, 0, 10)
    assert [deal.pk for deal in page] == [lost.pk, won.pk]  # the later moment first
    assert [int(row[0]) for row in rows] == [lost.pk, won.pk]
    assert [row[-1] for row in rows] == [local_date(deal.counted_at).isoformat() for deal in page]
