"""Access-control sweep (pitfalls.md, "Access control"): every URL pattern of the
project that takes a parameter is requested, GET and POST, as a rep of another team, a
manager of another team and an anonymous user. Each must answer 404/403 (or send the
anonymous user to sign in) with nothing of the object in the body, and write nothing.

``COVERED`` says, per URL name, how to build the parameters for an object of team A.
A new URL with a parameter that is not in it fails ``test_every_url_with_a_parameter_is
_covered``, naming it: add it to the table. The admin is staff-only and checked apart.
"""

import datetime
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from funnel import domain
from funnel.models import Offer
from funnel.stages import Stage
from kpis.models import KpiSnapshot, Target
from tests.factories import (
    CompanyFactory,
    ContactFactory,
    days_ago,
    deal_in_stage,
    lost_reason,
    won_deal,
)

pytestmark = pytest.mark.django_db

#: A URL parameter that selects a representation, not an object (DRF's format suffix).
NOT_AN_OBJECT = {"format"}


def parametrised_patterns(patterns=None, namespace="", prefix=""):
    """(name, route, parameters) of every URL pattern that takes a parameter."""
    if patterns is None:
        patterns = get_resolver().url_patterns
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = namespace
            if entry.namespace:
                inner = f"{namespace}:{entry.namespace}" if namespace else entry.namespace
            yield from parametrised_patterns(entry.url_patterns, inner, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            params = set(entry.pattern.regex.groupindex) - NOT_AN_OBJECT
            if entry.pattern.regex.groups and not params and not entry.pattern.regex.groupindex:
                params = {"<positional>"}
            if params:
                name = f"{namespace}:{entry.name}" if namespace else (entry.name or "")
                route = prefix + str(entry.pattern)
                yield (
                    name or route,
                    route,
                    frozenset(params | (set(entry.pattern.regex.groupindex) & NOT_AN_OBJECT)),
                )


def is_admin(name, route):
    return name.startswith("admin:") or route.startswith("admin/")


# The world: team A's objects --------------------------------------------------------------


@dataclass
class World:
    deal: object
    offer: object
    round: object
    activity: object
    won: object
    lost: object
    target: object
    snapshot: object
    company: object
    contact: object
    rep: object
    secrets: list = field(default_factory=list)


@pytest.fixture
def world(rep, manager, teammate, team_a, outsider, other_manager):
    company = CompanyFactory(name="Tajna Firma Zeta sp. z o.o.")
    deal = deal_in_stage(rep, Stage.NEGOTIATION, title="Secret Turbine Deal", company=company)
    offer = Offer.objects.get(deal=deal)
    round_ = domain.add_round(
        deal, held_at=days_ago(0, hour=0), proposed_value=Decimal("77123.45"), by=rep
    )
    activity = domain.log_activity(
        deal, kind="call", held_at=days_ago(1), outcome="Whispered 31337 terms", by=rep
    )
    won = won_deal(rep, title="Secret Won Deal", company=company)
    lost = deal_in_stage(rep, Stage.NEEDS, title="Secret Lost Deal", company=company)
    domain.mark_lost(lost, lost_reason("price"), by=rep, at=days_ago(1))
    month = datetime.date(2025, 3, 1)
    target = Target.objects.create(
        grain="month", period_start=month, team=team_a, amount=Decimal("98765.43")
    )
    snapshot = KpiSnapshot.objects.create(
        kpi="leads",
        grain="month",
        period_start=month,
        slice=f"rep:{rep.pk}",
        value=4242,
        numerator=4242,
        denominator=1,
    )
    contact = ContactFactory(company=company, last_name="Poufna")
    return World(
        deal=deal,
        offer=offer,
        round=round_,
        activity=activity,
        won=won,
        lost=lost,
        target=target,
        snapshot=snapshot,
        company=company,
        contact=contact,
        rep=rep,
        secrets=[
            "Secret Turbine Deal",
            "Secret Won Deal",
            "Secret Lost Deal",
            "Tajna Firma Zeta",
            "77123.45",
            "77 123,45",
            "Whispered 31337",
            "98765.43",
            "98 765,43",
            "4242",
            rep.email,
        ],
    )


@dataclass(frozen=True)
class Case:
    """How to reach one of team A's objects through a URL.

    ``scope``: "team" (team A's data: outsiders get nothing), "shared" (reference data
    every signed-in user reads by design: only the anonymous user is refused), or
    "param" (the parameter is not an object: outsiders may get the page, without team
    A's data). ``insider`` opens it for real, proving the parameters point at the
    object; ``shows`` is a string the insider's GET must contain."""

    build: object
    scope: str = "team"
    insider: str = "rep"
    shows: str | None = None


def _deal(attr="deal", shows=None, insider="rep"):
    return Case(lambda w: {"pk": getattr(w, attr).pk}, shows=shows, insider=insider)


def _offer():
    return Case(lambda w: {"pk": w.deal.pk, "offer_pk": w.offer.pk})


COVERED = {
    # Web: deals (funnel/urls.py)
    "funnel:detail": _deal(shows="Secret Turbine Deal"),
    "funnel:details": _deal(),
    "funnel:qualification": _deal(),
    "funnel:needs": _deal(),
    "funnel:activity": _deal(),
    "funnel:move": _deal(),
    "funnel:offer": _deal(),
    "funnel:offer_send": _offer(),
    "funnel:offer_accept": _offer(),
    "funnel:offer_reject": _offer(),
    "funnel:terms": _deal(),
    "funnel:round": _deal(),
    "funnel:closing": _deal("won"),
    "funnel:lost": _deal(),
    "funnel:disqualify": _deal(),
    "funnel:reopen": _deal("lost", insider="manager"),
    # Web: reports (reports/urls.py)
    "reports:stage": Case(lambda w: {"stage": Stage.NEGOTIATION.value}, scope="param"),
    "reports:target_delete": Case(lambda w: {"pk": w.target.pk}, insider="manager", shows="98"),
    # API (api/urls.py)
    "api:deal-detail": _deal(shows="Secret Turbine Deal"),
    "api:deal-agree-terms": _deal(),
    "api:deal-closing-document": _deal("won"),
    "api:deal-disqualify": _deal(),
    "api:deal-history": _deal(shows="negotiation"),
    "api:deal-lose": _deal(),
    "api:deal-move": _deal(),
    "api:deal-reopen": _deal("lost", insider="manager"),
    "api:deal-win": _deal("won"),
    "api:offer-detail": Case(lambda w: {"pk": w.offer.pk}, shows="10000.00"),
    "api:offer-accept": Case(lambda w: {"pk": w.offer.pk}),
    "api:offer-reject": Case(lambda w: {"pk": w.offer.pk}),
    "api:offer-send": Case(lambda w: {"pk": w.offer.pk}),
    "api:round-detail": Case(lambda w: {"pk": w.round.pk}, shows="77123.45"),
    "api:activity-detail": Case(lambda w: {"pk": w.activity.pk}, shows="Whispered 31337"),
    "api:closing-document-detail": Case(lambda w: {"pk": w.won.closing_document.pk}, shows="C/1"),
    "api:user-detail": Case(lambda w: {"pk": w.rep.pk}, shows='"username":"rep"'),
    "api:target-detail": Case(lambda w: {"pk": w.target.pk}, insider="manager", shows="98765.43"),
    "api:kpi-snapshot-detail": Case(lambda w: {"pk": w.snapshot.pk}, shows="4242"),
    # Reference data every signed-in user reads (and the API's own permissions limit
    # who edits it): only the anonymous user is refused.
    "api:company-detail": Case(lambda w: {"pk": w.company.pk}, scope="shared"),
    "api:contact-detail": Case(lambda w: {"pk": w.contact.pk}, scope="shared"),
    "api:channel-detail": Case(lambda w: {"pk": w.channel_pk}, scope="shared"),
    "api:lost-reason-detail": Case(lambda w: {"pk": lost_reason("price").pk}, scope="shared"),
    "api:marketing-spend-detail": Case(lambda w: {"pk": w.spend_pk}, scope="shared"),
}


def test_every_url_with_a_parameter_is_covered():
    uncovered = sorted(
        {
            f"{name} ({route})"
            for name, route, _ in parametrised_patterns()
            if not is_admin(name, route) and name not in COVERED
        }
    )
    assert uncovered == [], (
        "URLs taking a parameter that the access sweep does not cover: add them to "
        "COVERED in tests/production/test_access_sweep.py:\n" + "\n".join(uncovered)
    )


def test_the_table_names_only_existing_urls():
    names = {name for name, _, _ in parametrised_patterns()}
    assert sorted(set(COVERED) - names) == []


# Requests -------------------------------------------------------------------------------------


MISSING = 10**9


def _urls(name, world, missing=False):
    """Every pattern of ``name`` with its parameters (and format suffix) filled in; with
    ``missing``, ids of no object at all."""
    kwargs = COVERED[name].build(world)
    if missing:
        kwargs = {k: MISSING if isinstance(v, int) else v for k, v in kwargs.items()}
    urls = []
    for pattern_name, _route, params in parametrised_patterns():
        if pattern_name != name:
            continue
        filled = dict(kwargs)
        if "format" in params:
            filled["format"] = "json"
        urls.append(reverse(name, kwargs=filled))
    return sorted(set(urls))


def _state():
    """Everything a refused request might have written: each model's row count, and
    every deal's version."""
    from funnel.models import Deal

    counts = {
        m._meta.label: m._default_manager.count()
        for m in apps.get_models()
        if m._meta.app_label in ("funnel", "kpis", "accounts", "authtoken")
        and m._meta.label != "kpis.DirtyDay"
    }
    versions = dict(Deal.objects.values_list("pk", "version"))
    return counts, versions


@pytest.fixture
def reference(world):
    from funnel.models import Channel, MarketingSpend

    channel = Channel.objects.create(name="Trade fairs")
    spend = MarketingSpend.objects.create(
        channel=channel,
        month=datetime.date(2025, 3, 1),
        amount=Decimal("1000"),
        amount_base=Decimal("1000"),
    )
    world.channel_pk = channel.pk
    world.spend_pk = spend.pk
    return world


def _body(response):
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def _refused_for_outsider(response, same_for_missing):
    """403/404/405; or an answer that a missing object gets too (a body refused
    before the lookup, e.g. 400), which tells nothing about the object."""
    return response.status_code in (403, 404, 405) or same_for_missing()


def _answer(response):
    return response.status_code, _body(response)


def _refused_for_anonymous(url, response):
    if url.startswith("/api/"):
        return response.status_code in (401, 403, 405)
    if response.status_code == 405:
        return True
    return response.status_code == 302 and response["Location"].startswith("/accounts/login/")


VISITORS = ["outsider", "other_manager", "anonymous"]


@pytest.mark.parametrize("name", sorted(COVERED))
def test_outsiders_get_nothing(client, request, reference, name):
    world = reference
    case = COVERED[name]
    urls = _urls(name, world)
    assert urls, name
    missing_urls = dict(zip(urls, _urls(name, world, missing=True), strict=True))
    before = _state()

    failures = []
    for visitor in VISITORS:
        client.logout()
        if visitor != "anonymous":
            client.force_login(request.getfixturevalue(visitor))
        for url in urls:
            for method in ("get", "post"):
                try:
                    response = getattr(client, method)(url)
                except Exception as exc:  # a 500: named with the others below
                    failures.append(f"{visitor} {method.upper()} {url}: raised {exc!r}")
                    continue
                body = _body(response)
                if visitor == "anonymous":
                    refused = _refused_for_anonymous(url, response)
                elif case.scope == "team":
                    refused = _refused_for_outsider(
                        response,
                        lambda m=method, u=url, r=response: (
                            _answer(getattr(client, m)(missing_urls[u])) == _answer(r)
                        ),
                    )
                else:  # shared or a non-object parameter: outsiders may read it
                    refused = response.status_code < 500
                leaked = [s for s in world.secrets if s in body] if case.scope != "shared" else []
                if visitor == "anonymous":
                    leaked = [s for s in world.secrets if s in body]
                if not refused or leaked:
                    failures.append(
                        f"{visitor} {method.upper()} {url}: {response.status_code} {leaked}"
                    )

    assert failures == []
    assert _state() == before, "a refused request wrote something"


@pytest.mark.parametrize("name", sorted(n for n, c in COVERED.items() if c.scope == "team"))
def test_the_table_reaches_the_real_object(client, request, reference, name):
    """Control: team A's own user reaches the object through the same URLs, so the
    sweep's refusals are refusals and not wrong ids."""
    case = COVERED[name]
    client.force_login(request.getfixturevalue(case.insider))

    for url in _urls(name, reference):
        response = client.get(url)
        # A form page, the deal page a POST-only view sends a GET back to, or "use POST".
        assert response.status_code in (200, 302, 405), (url, response.status_code)
        if response.status_code == 302:
            assert not response["Location"].startswith("/accounts/login/"), url
        if case.shows is not None:
            assert response.status_code == 200, url
            assert case.shows in _body(response), url


# The admin: staff only -------------------------------------------------------------------------


def test_the_admin_sends_non_staff_users_to_its_login(client, rep, manager, reference):
    urls = [
        reverse("admin:funnel_deal_change", args=[reference.deal.pk]),
        reverse("admin:funnel_deal_history", args=[reference.deal.pk]),
        reverse("admin:funnel_offer_change", args=[reference.offer.pk]),
        reverse("admin:kpis_target_change", args=[reference.target.pk]),
        reverse("admin:accounts_user_change", args=[reference.rep.pk]),
        reverse("admin:funnel_deal_changelist"),
    ]
    for user in (None, rep, manager):
        client.logout()
        if user is not None:
            client.force_login(user)
        for url in urls:
            response = client.get(url)
            assert response.status_code == 302, (user, url)
            assert response["Location"].startswith("/admin/login/"), (user, url)
            assert "Secret Turbine Deal" not in _body(response)


def test_every_admin_url_with_a_parameter_is_under_the_admin_site():
    admin_routes = [route for name, route, _ in parametrised_patterns() if is_admin(name, "")]
    assert admin_routes
    assert all(route.startswith("admin/") for route in admin_routes)
