from funnel.stages import Stage
from tests.factories import PASSWORD, deal_in_stage


def test_the_login_page_is_served_to_anonymous_visitors(client):
    response = client.get("/", follow=True)
    assert response.redirect_chain == [("/accounts/login/?next=/", 302)]
    assert b'name="password"' in response.content


def test_a_rep_signs_in_and_sees_only_their_own_open_deals_per_stage(client, rep, teammate):
    deal_in_stage(rep, Stage.OFFER)
    deal_in_stage(teammate, Stage.OFFER)
    response = client.post(
        "/accounts/login/", {"username": "rep", "password": PASSWORD}, follow=True
    )
    assert response.status_code == 200
    assert {c["stage"].value: c["count"] for c in response.context["columns"]} == {
        "lead": 0,
        "qualification": 0,
        "needs": 0,
        "offer": 1,
        "negotiation": 0,
        "closing": 0,
    }
