"""Reps read their own numbers, managers their team's, admins everything: another
slice is a 404 on every report, export and drill-down."""

import pytest

from kpis.models import Target
from tests.reports.conftest import MARCH

pytestmark = pytest.mark.django_db

REPORTS = [
    "/reports/",
    "/reports/stage/lead/",
    "/reports/stage/qualification/",
    "/reports/stage/needs/",
    "/reports/stage/offer/",
    "/reports/stage/negotiation/",
    "/reports/stage/closing/",
    "/reports/company/",
]
EXPORTS = [
    ("/reports/", "funnel"),
    ("/reports/stage/offer/", "kpis"),
    ("/reports/stage/qualification/", "by_source"),
    ("/reports/stage/closing/", "by_reason"),
    ("/reports/company/", "revenue"),
]


def drill(slice_key, side="numerator"):
    return (
        "/reports/deals/?kpi=offer_acceptance_pct&grain=month&period=2026-03-01"
        f"&slice={slice_key}&side={side}"
    )


@pytest.mark.parametrize("url", REPORTS)
def test_a_rep_reads_only_their_own_slice(client, rep, teammate, team_a, outsider, url):
    client.force_login(rep)
    response = client.get(f"{url}?period=2026-03")
    assert response.status_code == 200
    assert response.context["slice_key"] == f"rep:{rep.pk}"
    for query in (
        f"rep={teammate.pk}",
        f"rep={outsider.pk}",
        f"team={team_a.pk}",
        "segment=SMB",
        "industry=Manufacturing",
        "channel=1",
        "rep=abc",
    ):
        assert client.get(f"{url}?{query}").status_code == 404, query
        assert client.get(f"{url}?{query}&export=kpis").status_code == 404, query


@pytest.mark.parametrize("url", REPORTS)
def test_a_manager_reads_their_team_and_its_people_only(
    client, manager, rep, team_a, team_b, outsider, other_manager, url
):
    client.force_login(manager)
    assert client.get(f"{url}?team={team_a.pk}").context["slice_key"] == f"team:{team_a.pk}"
    assert client.get(f"{url}?rep={rep.pk}").context["slice_key"] == f"rep:{rep.pk}"
    assert client.get(f"{url}?rep={manager.pk}").status_code == 200
    for query in (
        f"team={team_b.pk}",
        f"rep={outsider.pk}",
        f"rep={other_manager.pk}",
        "segment=SMB",
    ):
        assert client.get(f"{url}?{query}").status_code == 404, query


@pytest.mark.parametrize("url", REPORTS)
def test_an_admin_reads_any_slice(client, admin, team_b, outsider, url):
    client.force_login(admin)
    assert client.get(url).context["slice_key"] == "company"
    assert client.get(f"{url}?team={team_b.pk}").context["slice_key"] == f"team:{team_b.pk}"
    assert client.get(f"{url}?rep={outsider.pk}").context["slice_key"] == f"rep:{outsider.pk}"
    assert client.get(f"{url}?segment=SMB").context["slice_key"] == "segment:SMB"


@pytest.mark.parametrize("url", REPORTS)
def test_anonymous_visitors_are_sent_to_sign_in(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(("url", "key"), EXPORTS)
def test_exports_follow_the_same_rules(client, rep, manager, outsider, team_b, dataset, url, key):
    client.force_login(rep)
    assert client.get(f"{url}?period=2026-03&export={key}").status_code == 200
    assert client.get(f"{url}?period=2026-03&export=nope").status_code == 404
    assert client.get(f"{url}?rep={outsider.pk}&export={key}").status_code == 404
    client.force_login(manager)
    assert client.get(f"{url}?team={team_b.pk}&export={key}").status_code == 404


def test_drill_downs_follow_the_same_rules(
    client, rep, teammate, manager, outsider, team_a, team_b, admin, dataset
):
    client.force_login(rep)
    assert client.get(drill(f"rep:{rep.pk}")).status_code == 200
    for slice_key in (f"rep:{teammate.pk}", f"team:{team_a.pk}", "company", "segment:SMB"):
        assert client.get(drill(slice_key)).status_code == 404, slice_key
        assert client.get(drill(slice_key) + "&format=csv").status_code == 404, slice_key
    client.force_login(manager)
    team = client.get(drill(f"team:{team_a.pk}", "denominator"))
    assert {d.title for d in team.context["page"].object_list} == {
        "Accepted deal",
        "Rejected deal",
        "Pending deal",
    }
    for slice_key in (f"team:{team_b.pk}", f"rep:{outsider.pk}", "company"):
        assert client.get(drill(slice_key)).status_code == 404, slice_key
    client.force_login(admin)
    everything = client.get(drill("company", "denominator"))
    assert everything.context["page"].total == 4


def test_a_drill_down_of_an_unknown_kpi_or_side_is_a_404(client, admin, dataset):
    client.force_login(admin)
    base = "/reports/deals/?grain=month&period=2026-03-01&slice=company"
    assert client.get(f"{base}&kpi=nope").status_code == 404
    assert client.get(f"{base}&kpi=cpl&side=numerator").status_code == 404  # spend
    assert client.get(f"{base}&kpi=clv").status_code == 404  # not a list of deals
    assert client.get(f"{base}&kpi=leads&side=denominator").status_code == 404  # a count
    assert client.get(f"{base}&kpi=leads&breakdown=reason:price").status_code == 404


def test_reps_cannot_set_targets_or_recompute(client, rep, dataset):
    client.force_login(rep)
    assert client.get("/reports/targets/").status_code == 404
    response = client.post(
        "/reports/targets/",
        {"grain": "month", "period": "2026-03", "scope": f"rep:{rep.pk}", "amount": "1"},
    )
    assert response.status_code == 404
    assert not Target.objects.exists()
    assert (
        client.post("/reports/recompute/", {"grain": "month", "period": "2026-03"}).status_code
        == 404
    )


def test_a_manager_sets_a_target_for_their_rep_only(client, manager, rep, outsider, team_b):
    client.force_login(manager)
    response = client.post(
        "/reports/targets/",
        {"grain": "month", "period": "2026-03", "scope": f"rep:{rep.pk}", "amount": "25000"},
    )
    assert response.status_code == 302
    target = Target.objects.get()
    assert (target.rep, target.period_start, target.amount, target.set_by) == (
        rep,
        MARCH.start,
        25000,
        manager,
    )
    # Again for the same rep and period: replaced, not duplicated.
    client.post(
        "/reports/targets/",
        {"grain": "month", "period": "2026-03", "scope": f"rep:{rep.pk}", "amount": "30000"},
    )
    assert list(Target.objects.values_list("amount", flat=True)) == [30000]
    for scope in (f"rep:{outsider.pk}", f"team:{team_b.pk}", "company"):
        response = client.post(
            "/reports/targets/",
            {"grain": "month", "period": "2026-03", "scope": scope, "amount": "1"},
        )
        assert response.status_code == 200
        assert "scope" in response.context["form"].errors
    assert Target.objects.count() == 1


def test_a_negative_target_or_bad_period_is_refused_with_a_message(client, manager, rep):
    client.force_login(manager)
    response = client.post(
        "/reports/targets/",
        {"grain": "month", "period": "soon", "scope": f"rep:{rep.pk}", "amount": "-1"},
    )
    errors = response.context["form"].errors
    assert errors["amount"] == ["Ensure this value is greater than or equal to 0."]
    assert errors["period"] == ["“soon” is not a period of this grain."]
    assert not Target.objects.exists()


def test_removing_a_target_asks_first_and_is_404_for_others(client, manager, other_manager, rep):
    target = Target.objects.create(grain="month", period_start=MARCH.start, rep=rep, amount=5)
    client.force_login(other_manager)
    assert client.post(f"/reports/targets/{target.pk}/delete/").status_code == 404
    assert Target.objects.filter(pk=target.pk).exists()
    client.force_login(manager)
    confirm = client.get(f"/reports/targets/{target.pk}/delete/")
    assert b"Remove the target" in confirm.content
    assert Target.objects.filter(pk=target.pk).exists()
    client.post(f"/reports/targets/{target.pk}/delete/")
    assert not Target.objects.filter(pk=target.pk).exists()


def test_the_targets_page_shows_attainment(client, manager, rep, dataset):
    from kpis.recompute import recompute_period

    Target.objects.create(grain="month", period_start=MARCH.start, rep=rep, amount=20000)
    recompute_period("month", MARCH.start)
    client.force_login(manager)
    response = client.get("/reports/targets/?grain=month&period=2026-03")
    [(target, reading)] = response.context["lines"]
    assert (target.rep, reading.value, reading.denominator) == (rep, 0, 20000)
