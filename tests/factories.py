"""factory_boy factories, and ``deal_in_stage`` for deals in any stage.

Deals are always made through the domain functions, so a test deal is exactly what a
user's clicks would have produced: stamps, history rows, offers and terms included.
"""

import datetime
from decimal import Decimal

import factory
from django.utils import timezone

from accounts.models import Role, Team, User
from funnel import domain
from funnel.models import Channel, Company, Contact, LostReason
from funnel.stages import Stage

PASSWORD = "correct-horse-battery-staple"


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"Team {n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    role = Role.REP
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class CompanyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Company
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Company {n} sp. z o.o.")
    industry = "Manufacturing"
    segment = "SMB"


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    company = factory.SubFactory(CompanyFactory)
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")


class ChannelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Channel
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Channel {n}")


def lost_reason(code="price"):
    """One of the lost reasons the data migration seeds (tests/conftest.py re-seeds them
    for tests that commit)."""
    return LostReason.objects.get(code=code)


def days_ago(days, hour=12):
    """A moment ``days`` days before now, at ``hour`` o'clock local time."""
    moment = timezone.localtime() - datetime.timedelta(days=days)
    return moment.replace(hour=hour, minute=0, second=0, microsecond=0)


def make_deal(
    owner, *, at=None, company=None, channel=None, estimated_value=Decimal("10000"), **kw
):
    return domain.create_deal(
        by=owner,
        owner=owner,
        company=company or CompanyFactory(),
        channel=channel,
        title=kw.pop("title", "Deal"),
        estimated_value=estimated_value,
        at=at or days_ago(60),
        **kw,
    )


def deal_in_stage(owner, stage, *, start_days_ago=60, value=Decimal("10000"), **kw):
    """An open deal that walked, day by day, from lead to ``stage`` through the domain
    functions, with the sent offer and the agreed terms the later stages need."""
    stage = Stage(stage)
    deal = make_deal(owner, at=days_ago(start_days_ago), estimated_value=value, **kw)
    day = start_days_ago
    order = list(Stage)
    for next_stage in order[1 : order.index(stage) + 1]:
        day -= 1
        if next_stage == Stage.NEGOTIATION:
            offer = domain.start_offer(deal, value=value, by=owner, at=days_ago(day))
            domain.send_offer(offer, by=owner, at=days_ago(day, hour=13))
            day -= 1
        if next_stage == Stage.CLOSING:
            domain.agree_terms(
                deal,
                agreed_value=value * Decimal("0.9"),
                discount_pct=10,
                by=owner,
                at=days_ago(day),
            )
            day -= 1
        domain.move_forward(deal, next_stage, by=owner, at=days_ago(day))
    deal.refresh_from_db()
    return deal


def won_deal(owner, **kw):
    deal = deal_in_stage(owner, Stage.CLOSING, **kw)
    domain.save_closing_document(
        deal,
        document_type="contract",
        issue_date=timezone.localdate() - datetime.timedelta(days=5),
        final_value=deal.agreed_value,
        number="C/1",
        by=owner,
    )
    domain.win(deal, by=owner, at=days_ago(3))
    return deal
