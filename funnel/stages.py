"""The one stage vocabulary: codes, order and labels of the six funnel stages.

Forms, admin, API, reports and KPIs read stages from here and nowhere else.
"""

from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy


class Stage(models.TextChoices):
    LEAD = "lead", pgettext_lazy("stage", "Lead")
    QUALIFICATION = "qualification", pgettext_lazy("stage", "Qualification")
    NEEDS = "needs", pgettext_lazy("stage", "Needs analysis")
    OFFER = "offer", pgettext_lazy("stage", "Offer")
    NEGOTIATION = "negotiation", pgettext_lazy("stage", "Negotiation")
    CLOSING = "closing", pgettext_lazy("stage", "Pro-forma or contract")


class Status(models.TextChoices):
    OPEN = "open", _("Open")
    WON = "won", _("Won")
    LOST = "lost", _("Lost")


#: Stages in funnel order.
ORDER: tuple[Stage, ...] = tuple(Stage)
_INDEX = {stage: i for i, stage in enumerate(ORDER)}

#: The stage whose entry makes a deal an opportunity (a qualified lead).
OPPORTUNITY_STAGE = Stage.NEEDS


def index(stage) -> int:
    return _INDEX[Stage(stage)]


def stamp_field(stage) -> str:
    """The name of the deal field that holds the first entry into ``stage``."""
    return f"entered_{Stage(stage).value}_at"


STAMP_FIELDS: tuple[str, ...] = tuple(stamp_field(s) for s in ORDER)


def between(current, target) -> list[Stage]:
    """The stages strictly after ``current`` and strictly before ``target``: the ones a
    forward move from ``current`` to ``target`` skips."""
    return list(ORDER[index(current) + 1 : index(target)])


def is_forward(current, target) -> bool:
    return index(target) > index(current)


def previous(stage) -> Stage | None:
    i = index(stage)
    return ORDER[i - 1] if i else None


def following(stage) -> Stage | None:
    i = index(stage)
    return ORDER[i + 1] if i + 1 < len(ORDER) else None
