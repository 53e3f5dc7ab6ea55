"""A fixed month of offers for the report tests: March 2026 (and one deal in February,
for the comparison with the previous period), made through the domain functions, then
recomputed into snapshots as the KPI engine stores them."""

import datetime
from decimal import Decimal

import pytest
from django.core.cache import cache

from funnel import domain
from funnel.stages import Stage
from kpis.periods import Period, tz
from kpis.recompute import recompute_period
from tests.factories import ChannelFactory, lost_reason, make_deal

MARCH = Period("month", datetime.date(2026, 3, 1))
FEBRUARY = Period("month", datetime.date(2026, 2, 1))


def at(month, day, hour=12):
    return datetime.datetime(2026, month, day, hour, tzinfo=tz())


def offer_deal(owner, *, month=3, lead_day, sent_day, value, title, response=None, **kw):
    """A deal that walked lead → qualification → needs → offer one day at a time, with
    one offer prepared from the day it entered offer and sent on ``sent_day``."""
    deal = make_deal(owner, at=at(month, lead_day), title=title, estimated_value=value, **kw)
    for i, stage in enumerate((Stage.QUALIFICATION, Stage.NEEDS, Stage.OFFER), start=1):
        domain.move_forward(deal, stage, by=owner, at=at(month, lead_day + i))
        deal.refresh_from_db()
    offer = domain.start_offer(deal, value=Decimal(value), by=owner, at=at(month, lead_day + 3))
    domain.send_offer(offer, by=owner, at=at(month, sent_day))
    if response:
        kind, day = response
        if kind == "accept":
            domain.accept_offer(offer, by=owner, at=at(month, day))
        else:
            domain.reject_offer(offer, by=owner, at=at(month, day))
    deal.refresh_from_db()
    return deal


@pytest.fixture
def dataset(rep, teammate, outsider, manager, other_manager, admin):
    web = ChannelFactory(name="Web")
    deals = {
        # February: one offer of the rep, accepted (acceptance 100 % in February).
        "feb": offer_deal(
            rep,
            month=2,
            lead_day=2,
            sent_day=10,
            value="5000",
            title="Feb deal",
            response=("accept", 12),
            channel=web,
        ),
        # March: the rep sends two (one accepted, one rejected and lost), the teammate
        # one still pending, the outsider (team B) one accepted.
        "accepted": offer_deal(
            rep,
            lead_day=1,
            sent_day=6,
            value="10000",
            title="Accepted deal",
            response=("accept", 8),
            channel=web,
            heard_from="Fair",
        ),
        "rejected": offer_deal(
            rep,
            lead_day=1,
            sent_day=7,
            value="20000",
            title="Rejected deal",
            response=("reject", 10),
            heard_from='=HYPERLINK("http://x")',
        ),
        "pending": offer_deal(
            teammate, lead_day=2, sent_day=8, value="30000", title="Pending deal", heard_from="Fair"
        ),
        "outside": offer_deal(
            outsider,
            lead_day=2,
            sent_day=9,
            value="40000",
            title="Outsider deal",
            response=("accept", 12),
        ),
    }
    domain.mark_lost(deals["rejected"], lost_reason("price"), by=rep, at=at(3, 11))
    deals["lead"] = make_deal(
        rep, at=at(3, 20), title="Lead only", channel=web, heard_from="@SUM(1+1)"
    )
    recompute_period("month", FEBRUARY.start)
    recompute_period("month", MARCH.start)
    cache.clear()  # the maturity horizon is cached per hour; start every test cold
    return deals
