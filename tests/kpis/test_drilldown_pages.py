"""A drill-down page reads its deals off the index of the column each moment comes
from, newest first, and checks derived moments against the family. Read page after page,
the list is exactly the deals behind the number, each once, newest first, each at the
moment that counted it: for every KPI with deals behind it, both sides, for an admin, a
manager and a rep, with pages and read-ahead batches small enough to cross every
boundary."""

from decimal import Decimal

import pytest

from accounts.access import deal_owner_q
from funnel import domain
from funnel.models import ActivityKind, Deal
from funnel.stages import Stage
from kpis import drilldown
from kpis.definitions import KPIS
from kpis.periods import Period, local_date
from reports.data import deals_for, has_deals
from tests.factories import days_ago, deal_in_stage, lost_reason, make_deal, won_deal

SIDES = [
    (kpi.code, side)
    for kpi in KPIS
    for side in ("numerator", "denominator")
    if has_deals(kpi, side)
]


@pytest.fixture
def deals(rep, teammate, outsider):
    """Deals of two reps of one team and one of another, reaching each derived moment by
    each of its branches, some with several offers and meetings, some at equal moments."""
    for owner, start in ((rep, 40), (teammate, 40), (outsider, 38), (rep, 35)):
        won_deal(owner, start_days_ago=start)
    paid = deal_in_stage(rep, Stage.CLOSING, start_days_ago=33)
    domain.save_closing_document(
        paid,
        document_type="proforma",
        issue_date=local_date(days_ago(6)),
        final_value=paid.agreed_value,
        by=rep,
    )
    domain.win(paid, by=rep, at=days_ago(4))
    for stage, start in ((Stage.QUALIFICATION, 36), (Stage.NEEDS, 34), (Stage.CLOSING, 32)):
        lost = deal_in_stage(teammate, stage, start_days_ago=start)
        domain.mark_lost(lost, lost_reason("price"), by=teammate, at=days_ago(start - 10))
    accepted = deal_in_stage(teammate, Stage.OFFER, start_days_ago=31)
    offer = domain.start_offer(accepted, value=Decimal("7000"), by=teammate, at=days_ago(28))
    domain.send_offer(offer, by=teammate, at=days_ago(28, hour=13))
    domain.accept_offer(offer, by=teammate, at=days_ago(26))
    touched = make_deal(rep, at=days_ago(22), first_touch_at=days_ago(24), segment="SMB")
    domain.move_forward(touched, Stage.QUALIFICATION, by=rep, at=days_ago(21))
    touched.refresh_from_db()
    domain.move_forward(touched, Stage.NEEDS, by=rep, at=days_ago(20))
    domain.log_activity(touched, kind=ActivityKind.MEETING, held_at=days_ago(19), by=rep)
    touched.refresh_from_db()
    domain.move_forward(touched, Stage.OFFER, by=rep, at=days_ago(18))
    for owner in (rep, teammate):
        lost_at_offer = deal_in_stage(owner, Stage.OFFER, start_days_ago=30)
        for day in (27, 25):  # the first rejected, the second still unanswered
            offer = domain.start_offer(
                lost_at_offer, value=Decimal("9000"), by=owner, at=days_ago(day)
            )
            domain.send_offer(offer, by=owner, at=days_ago(day, hour=13))
            if day == 27:
                domain.reject_offer(offer, by=owner, at=days_ago(day - 1))
        lost_at_offer.refresh_from_db()
        domain.mark_lost(lost_at_offer, lost_reason("price"), by=owner, at=days_ago(23))
        lost_in_negotiation = deal_in_stage(owner, Stage.NEGOTIATION, start_days_ago=20)
        domain.mark_lost(lost_in_negotiation, lost_reason("timing"), by=owner, at=days_ago(12))
        needs = deal_in_stage(owner, Stage.NEEDS, start_days_ago=15)
        for day in (10, 9):
            domain.log_activity(needs, kind=ActivityKind.MEETING, held_at=days_ago(day), by=owner)
        lead = make_deal(owner, at=days_ago(8), segment="SMB")
        domain.mark_lost(lead, lost_reason("price"), by=owner, at=days_ago(7))


def expected(deal_list, user):
    """{deal id: the latest moment that counts it}, straight from the family rows."""
    visible = set(Deal.objects.visible_to(user).values_list("pk", flat=True))
    out = {}
    for part in deal_list.parts:
        key = "pk" if part.family.model is Deal else "deal_id"
        for deal_id, moment in part.rows.values_list(key, "_moment"):
            if deal_id in visible:
                out[deal_id] = max(out.get(deal_id, moment), moment)
    return out


def read_all(deal_list, user, per_page):
    listed, offset = [], 0
    while True:
        page = deal_list.page(user, offset, per_page)
        listed += page
        if len(page) < per_page:
            return listed
        offset += per_page


def test_page_after_page_lists_every_deal_once_newest_first(
    deals, rep, manager, admin, team_a, monkeypatch
):
    # One dataset for every KPI side (building it is most of the cost).
    monkeypatch.setattr(drilldown, "FIRST_BATCH", 1)
    monkeypatch.setattr(drilldown, "LAST_BATCH", 2)
    period = Period.containing("quarter", local_date(days_ago(20)))
    viewers = ((admin, "company"), (manager, f"team:{team_a.pk}"), (rep, f"rep:{rep.pk}"))
    # Every KPI side by slice, and the breakdowns a drill-down is linked from.
    cases = [(code, side, "") for code, side in SIDES]
    cases += [
        ("lost_reasons", "numerator", "reason:price"),
        ("lost_reasons", "numerator", "stage:offer"),
        ("lead_quality_pct", "denominator", "segment:SMB"),
    ]
    for code, side, breakdown in cases:
        found = 0
        for user, slice_key in viewers:
            numerator, denominator = drilldown.deals_behind(code, period, slice_key, breakdown)
            deal_list = deals_for(KPIS[code], side, numerator, denominator)
            want = expected(deal_list, user)
            everything = deal_list.queryset().filter(deal_owner_q(user))
            assert set(everything.values_list("pk", flat=True)) == want.keys()
            for per_page in (2, 50):
                listed = read_all(deal_list, user, per_page)
                context = (code, side, breakdown, slice_key, per_page)
                assert len({d.pk for d in listed}) == len(listed), context
                assert {d.pk: d.counted_at for d in listed} == want, context
                moments = [d.counted_at for d in listed]
                assert moments == sorted(moments, reverse=True), context
            found += len(want)
        # Not a comparison of empty lists: this KPI side has deals here.
        assert found > 0, (code, side, breakdown)
