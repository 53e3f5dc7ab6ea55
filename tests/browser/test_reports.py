"""A manager reviews the offer stage in a real browser: filters to one rep, opens the
deals behind the acceptance rate and exports the table."""

import csv
import io
from pathlib import Path

from tests.reports.conftest import dataset  # noqa: F401 (the fixed March dataset)


def test_a_manager_drills_into_a_reps_offer_acceptance_and_exports_it(
    page,
    sign_in,
    manager,
    rep,
    dataset,  # noqa: F811
):
    sign_in(manager)
    page.goto("/reports/stage/offer/?period=2026-03")
    assert page.locator("h1").inner_text() == "Stage report: Offer"
    assert page.get_by_test_id("slice-label").inner_text() == "Team A"
    row = page.locator('tr[data-kpi="offer_acceptance_pct"]')
    assert row.locator("td.value").inner_text().startswith("33.3 %")

    page.select_option("select[name=rep]", str(rep.pk))
    page.click("form.report-filters button[type=submit]")
    page.wait_for_load_state()
    assert page.get_by_test_id("slice-label").inner_text() == str(rep)
    row = page.locator('tr[data-kpi="offer_acceptance_pct"]')
    assert row.locator("td.value").inner_text().startswith("50.0 %")
    assert row.locator(".delta").get_attribute("class") == "delta down bad"
    # The trend chart was drawn by Chart.js from the app's own static files.
    assert page.evaluate("typeof Chart") == "function"
    assert page.evaluate("Chart.getChart('trend-chart') !== undefined")

    row.locator("td.value a").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Offer acceptance %"
    assert page.locator("table.deals-table tbody tr td:first-child").all_inner_texts() == [
        "Accepted deal"
    ]
    page.get_by_role("link", name="Denominator").click()
    page.wait_for_load_state()
    assert page.locator("table.deals-table tbody tr td:first-child").all_inner_texts() == [
        "Rejected deal",
        "Accepted deal",
    ]
    assert page.get_by_test_id("deal-count").inner_text() == "2 deals"

    page.go_back()
    page.go_back()
    page.wait_for_load_state()
    with page.expect_download() as info:
        page.get_by_test_id("export-kpis").click()
    download = info.value
    assert download.suggested_filename == "offer-kpis-2026-03.csv"
    text = Path(download.path()).read_text(encoding="utf-8-sig")
    lines = list(csv.reader(io.StringIO(text)))
    assert ["Slice", str(rep)] in lines
    acceptance = next(line for line in lines if len(line) > 1 and line[1] == "offer_acceptance_pct")
    assert acceptance[:8] == [
        "Offer acceptance %",
        "offer_acceptance_pct",
        "2026-03",
        "50.0000",
        "100.0000",
        "-50.0000",
        "1.0000",
        "2.0000",
    ]
