from funnel.stages import Stage
from tests.factories import won_deal


def test_a_deal_walks_the_whole_funnel_to_won(rep):
    deal = won_deal(rep)
    assert deal.stage == Stage.CLOSING
    assert deal.status == "won"
    assert [h.event for h in deal.history.all()] == [
        "created",
        "moved",
        "moved",
        "moved",
        "moved",
        "moved",
        "won",
    ]
