"""Who may see what, decided once in accounts/access.py: a rep sees the deals they own,
a manager those of the teams they lead and their own, an admin everything; nobody else
sees anything, and a lookup outside one's rows is a 404."""

import datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import Http404
from django.utils import timezone

from accounts.access import get_visible_or_404, user_q
from accounts.models import Role, User
from funnel import domain
from funnel.models import (
    Activity,
    ClosingDocument,
    Deal,
    DealChange,
    NegotiationRound,
    Offer,
    StageHistory,
)
from funnel.stages import Stage
from tests.factories import UserFactory, days_ago, deal_in_stage, make_deal

pytestmark = pytest.mark.django_db

CAST = ("rep", "teammate", "manager", "other_manager", "outsider", "admin")


def full_deal(owner, title):
    """A deal in closing with a row of every related model: history, offer, round,
    activity, change and closing document."""
    deal = deal_in_stage(owner, Stage.NEGOTIATION, start_days_ago=20, title=title)
    domain.add_round(deal, held_at=days_ago(14), proposed_value=Decimal("9500"), by=owner)
    domain.log_activity(deal, kind="meeting", held_at=days_ago(14), by=owner, outcome="Demo")
    domain.agree_terms(deal, agreed_value=Decimal("9000"), by=owner, at=days_ago(13))
    domain.move_forward(deal, Stage.CLOSING, by=owner, at=days_ago(12))
    domain.save_closing_document(
        deal,
        document_type="contract",
        issue_date=timezone.localdate() - datetime.timedelta(days=5),
        final_value=Decimal("9000"),
        by=owner,
    )
    return deal


@pytest.fixture
def cast(rep, teammate, manager, other_manager, outsider, admin):
    return {
        "rep": rep,
        "teammate": teammate,
        "manager": manager,
        "other_manager": other_manager,
        "outsider": outsider,
        "admin": admin,
    }


@pytest.fixture
def deals(cast):
    """One lead owned by each member of the cast but the admin, keyed by its owner."""
    return {
        name: make_deal(user, title=f"{name}'s deal")
        for name, user in cast.items()
        if name != "admin"
    }


@pytest.fixture
def full_deals(cast):
    """Like ``deals``, with rows of every related model."""
    return {
        name: full_deal(user, title=f"{name}'s deal")
        for name, user in cast.items()
        if name != "admin"
    }


#: Whose deals each member of the cast sees.
SEES = {
    "rep": {"rep"},
    "teammate": {"teammate"},
    "manager": {"rep", "teammate", "manager"},
    "other_manager": {"outsider", "other_manager"},
    "outsider": {"outsider"},
    "admin": {"rep", "teammate", "manager", "other_manager", "outsider"},
}


def ids(queryset):
    return set(queryset.values_list("pk", flat=True))


@pytest.mark.parametrize("viewer", CAST)
def test_each_member_of_the_cast_sees_exactly_their_deals(cast, deals, viewer):
    visible = ids(Deal.objects.visible_to(cast[viewer]))

    assert visible == {deals[owner].pk for owner in SEES[viewer]}


@pytest.mark.parametrize(
    ("viewer", "sees"),
    [
        ("rep", True),
        ("manager", True),
        ("admin", True),
        ("teammate", False),
        ("other_manager", False),
        ("outsider", False),
    ],
)
def test_a_reps_deal_is_visible_to_the_rep_their_manager_and_the_admin_only(
    cast, deals, viewer, sees
):
    deal = deals["rep"]

    assert Deal.objects.visible_to(cast[viewer]).filter(pk=deal.pk).exists() is sees


def test_a_managers_own_deals_are_visible_to_them(cast, deals):
    manager = cast["manager"]
    assert manager.team is None  # a manager leads the team; they are not a member of it

    assert deals["manager"].pk in ids(Deal.objects.visible_to(manager))


def test_an_anonymous_visitor_sees_nothing(deals):
    assert ids(Deal.objects.visible_to(AnonymousUser())) == set()
    assert ids(Deal.objects.visible_to(None)) == set()


@pytest.mark.parametrize("viewer", ["rep", "manager", "admin"])
def test_an_inactive_user_sees_nothing(cast, deals, viewer):
    user = cast[viewer]
    user.is_active = False
    user.save()

    assert ids(Deal.objects.visible_to(user)) == set()


def test_a_superuser_sees_everything_whatever_its_role(deals):
    root = UserFactory(username="root", role=Role.REP, is_superuser=True)

    assert ids(Deal.objects.visible_to(root)) == {d.pk for d in deals.values()}


def test_a_manager_sees_the_deals_of_a_rep_who_joined_their_team(cast, deals):
    outsider = cast["outsider"]
    outsider.team = cast["rep"].team
    outsider.save()

    assert deals["outsider"].pk in ids(Deal.objects.visible_to(cast["manager"]))
    assert deals["outsider"].pk not in ids(Deal.objects.visible_to(cast["other_manager"]))


RELATED = [StageHistory, Offer, NegotiationRound, Activity, DealChange, ClosingDocument]


@pytest.mark.parametrize("model", RELATED, ids=lambda m: m.__name__)
def test_related_rows_are_visible_exactly_when_their_deal_is(cast, full_deals, model):
    for viewer in CAST:
        visible = ids(model.objects.visible_to(cast[viewer]))

        expected = ids(model.objects.filter(deal__in=[full_deals[owner] for owner in SEES[viewer]]))
        assert expected, viewer  # every deal has rows of every related model
        assert visible == expected, viewer

    rep = cast["rep"]
    rep.is_active = False
    rep.save()
    assert ids(model.objects.visible_to(AnonymousUser())) == set()
    assert ids(model.objects.visible_to(None)) == set()
    assert ids(model.objects.visible_to(rep)) == set()


def test_get_visible_or_404_returns_a_visible_deal(cast, deals):
    deal = deals["rep"]

    assert get_visible_or_404(Deal.objects, cast["rep"], pk=deal.pk) == deal
    assert get_visible_or_404(Deal.objects.all(), cast["manager"], pk=deal.pk) == deal


@pytest.mark.parametrize("viewer", ["outsider", "teammate", "other_manager"])
def test_get_visible_or_404_raises_404_for_someone_who_may_not_see_the_deal(cast, deals, viewer):
    deal = deals["rep"]

    with pytest.raises(Http404):
        get_visible_or_404(Deal.objects, cast[viewer], pk=deal.pk)


def test_get_visible_or_404_raises_404_for_a_related_row_of_anothers_deal(cast, full_deals):
    offer = Offer.objects.get(deal=full_deals["rep"])

    assert get_visible_or_404(Offer.objects, cast["manager"], pk=offer.pk) == offer
    with pytest.raises(Http404):
        get_visible_or_404(Offer.objects, cast["outsider"], pk=offer.pk)


def test_get_visible_or_404_raises_404_for_a_missing_row(cast, deals):
    with pytest.raises(Http404):
        get_visible_or_404(Deal.objects, cast["admin"], pk=max(d.pk for d in deals.values()) + 1)


@pytest.mark.parametrize(
    ("viewer", "sees"),
    [
        ("rep", {"rep"}),
        ("teammate", {"teammate"}),
        ("manager", {"rep", "teammate", "manager"}),
        ("other_manager", {"outsider", "other_manager"}),
        ("outsider", {"outsider"}),
        ("admin", set(CAST)),
    ],
)
def test_user_q_gives_the_users_whose_data_each_member_may_see(cast, viewer, sees):
    assert ids(User.objects.filter(user_q(cast[viewer]))) == {cast[name].pk for name in sees}


def test_user_q_gives_anonymous_and_inactive_users_nobody(cast):
    rep = cast["rep"]
    rep.is_active = False
    rep.save()

    assert ids(User.objects.filter(user_q(AnonymousUser()))) == set()
    assert ids(User.objects.filter(user_q(rep))) == set()
