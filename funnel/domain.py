"""Transitions and edits of deals: the only way a deal changes.

Web forms, the API, the admin, CSV import and the demo seeder all call these functions.
Each validates against domain.md, runs in one transaction, stamps the stage entry,
writes the append-only history row, and saves the deal with a conditional UPDATE on its
version, so a change based on a stale copy is refused instead of overwriting.

Every function takes ``by`` (the acting user) and an optional ``at`` for historical data
(imports, demo data); ``at`` defaults to now, may not lie in the future, and may not
precede the deal's latest recorded event, so stage stamps always stay in order.

``at`` is the business moment ("the client agreed on Monday"). Every history and
change-log row also gets ``entered_at``, the server's clock at the write (the deal's
``updated_at`` of the same write): no caller can give it, so an auditor can tell a
back-dated entry from one made at the time.
"""

import datetime
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from funnel import stages
from funnel.models import (
    Activity,
    ClosingDocument,
    Deal,
    DealChange,
    DocumentType,
    LostReason,
    NegotiationRound,
    Offer,
    OfferStatus,
    StageEvent,
    StageHistory,
)
from funnel.money import CENT, local_date, to_base
from funnel.stages import Stage, Status
from kpis import changes as pending
from kpis.dirty import mark_deal


class DomainError(ValidationError):
    """A change that domain.md forbids. Carries a message (and optionally a field) that
    forms and the API show as they are."""

    def __init__(self, message, code=None, params=None):
        # ValidationError drops ``code`` when the message is a {field: message} dict; keep
        # it on each field's message so callers (API, tests) can tell refusals apart.
        if isinstance(message, dict) and code is not None:
            message = {
                field: ValidationError(text, code=code) if isinstance(text, str) else text
                for field, text in message.items()
            }
        super().__init__(message, code, params)


class StaleDealError(Exception):
    """The deal changed since the caller read it: nothing was written."""

    def __init__(self, deal=None):
        self.deal = deal
        super().__init__(
            _(
                "Someone else changed this deal in the meantime. Review the current data and try again."
            )
        )


#: Edits of these fields are written to the deal's change log (domain.md: "Edits of a
#: deal's value, discount, owner or expected close date are recorded too"). Stage and
#: status change only through the transitions, which write the stage history instead.
TRACKED_FIELDS = (
    "estimated_value",
    "agreed_value",
    "discount_pct",
    "owner",
    "expected_close_date",
    "currency",
)

#: The closing document's fields whose edits are logged too: what it is, its number, its
#: issue date and its final value (``save_closing_document``), and the moment it was
#: signed or paid (``win``). The base-currency amount is derived from these, as a deal's
#: base amounts are, and is not logged apart.
DOCUMENT_TRACKED_FIELDS = ("document_type", "number", "issue_date", "final_value")

#: Fields ``update_deal`` may change; stage, status, stamps and outcomes change only
#: through the transitions below.
EDITABLE_FIELDS = (
    "title",
    "company",
    "contact",
    "channel",
    "owner",
    "currency",
    "estimated_value",
    "first_touch_at",
    "heard_from",
    "contact_prompt",
    "product_scope",
    "industry",
    "segment",
    "qualification_score",
    "problems",
    "desired_outcomes",
    "expected_close_date",
    "discount_pct",
    "lost_note",
)


# Helpers ------------------------------------------------------------------------------


def _moment(at, *, field="at"):
    now = timezone.now()
    if at is None:
        return now
    if isinstance(at, datetime.datetime) and timezone.is_naive(at):
        raise DomainError({field: _("The moment must carry a time zone.")}, code="naive")
    if at > now:
        raise DomainError({field: _("A moment in the future cannot be recorded.")}, code="future")
    return at


def _not_before(deal, at, *, field="at"):
    if at < deal.last_event_at:
        raise DomainError(
            {
                field: _(
                    "This moment precedes the deal's latest recorded event (%(latest)s); "
                    "stages must stay in order."
                )
                % {"latest": timezone.localtime(deal.last_event_at).strftime("%Y-%m-%d %H:%M")}
            },
            code="out_of_order",
        )


def _require_open(deal):
    if deal.status != Status.OPEN:
        raise DomainError(
            _("This deal is %(status)s: a closed deal cannot change stage.")
            % {"status": deal.get_status_display().lower()},
            code="closed",
        )


def _money(value, field):
    if value is None:
        return None
    try:
        value = Decimal(value)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise DomainError({field: _("Enter a number.")}, code="invalid") from exc
    if not value.is_finite():
        raise DomainError({field: _("Enter a number.")}, code="invalid")
    if value < 0:
        raise DomainError({field: _("An amount cannot be negative.")}, code="negative")
    return _cents(value, field)


def _cents(value, field):
    """``value`` with exactly two decimal places, as the database stores it: the base
    amount is computed from, and the change log shows, what is actually saved."""
    try:
        cents = value.quantize(CENT)
    except InvalidOperation as exc:
        raise DomainError({field: _("Enter a smaller number.")}, code="max_digits") from exc
    if value != cents:
        raise DomainError({field: _("Use at most two decimal places.")}, code="max_decimal_places")
    return cents


def _percent(value, field):
    if value is None:
        return None
    try:
        value = Decimal(value)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise DomainError({field: _("Enter a number.")}, code="invalid") from exc
    if not value.is_finite() or not Decimal(0) <= value <= Decimal(100):
        raise DomainError({field: _("A discount is a percentage from 0 to 100.")}, code="range")
    return _cents(value, field)


def _check_version(deal, expected_version):
    if expected_version is not None and int(expected_version) != deal.version:
        raise StaleDealError(deal)


@contextmanager
def _changing(deal, expected_version=None):
    """One transaction around a change; on any refusal the caller's instance is
    reloaded so it shows what the database holds, not the half-applied change."""
    try:
        with transaction.atomic():
            _check_version(deal, expected_version)
            # Before anything is written: what the KPI ledger holds for the deal.
            pending.capture(deal.pk)
            yield
    except Exception:
        if deal.pk:
            deal.refresh_from_db()
        raise


def _write(deal, fields):
    """Save ``fields`` of ``deal`` only if nobody changed it since it was read. Returns
    the moment of the write: the ``entered_at`` of the rows that record it."""
    now = timezone.now()
    values = {Deal._meta.get_field(f).attname: getattr(deal, f) for f in fields}
    updated = Deal.objects.filter(pk=deal.pk, version=deal.version).update(
        version=F("version") + 1, updated_at=now, **values
    )
    if updated != 1:
        raise StaleDealError(deal)
    deal.version += 1
    deal.updated_at = now
    # In the same transaction: the KPIs this deal feeds are now stale.
    mark_deal(deal)
    return now


def _display(value):
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        # In the organisation's time zone, with its offset: unambiguous and readable.
        return timezone.localtime(value).isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def changed(before, current, fields):
    """[(field, old, new)] as the change log shows them, for each of ``fields`` whose
    value now (``current(name)``) differs from ``before``. The one rule of what is
    logged, for these functions and the bulk replays (funnel/demo.py, import_bulk.py)."""
    return [
        (name, _display(before[name]), _display(current(name)))
        for name in fields
        if name in before and before[name] != current(name)
    ]


#: A closing document's logged fields before it exists: a new document's are logged as
#: set from nothing.
NO_DOCUMENT = {**dict.fromkeys(DOCUMENT_TRACKED_FIELDS), "number": ""}


def _changes(deal, obj, before, fields, *, by, at, entered_at):
    """The change-log rows for the ``fields`` of ``obj`` (the deal or its closing
    document) that differ from ``before``."""
    return [
        DealChange(
            deal=deal, field=name, old_value=old, new_value=new, by=by, at=at, entered_at=entered_at
        )
        for name, old, new in changed(before, lambda name: getattr(obj, name), fields)
    ]


def _record_changes(deal, before, by, at, entered_at):
    DealChange.objects.bulk_create(
        _changes(deal, deal, before, TRACKED_FIELDS, by=by, at=at, entered_at=entered_at)
    )


def current_value_base(deal):
    """Final value if won; else agreed value; else the latest sent offer's value; else
    the estimate. In base currency (domain.md, "Current value")."""
    if deal.status == Status.WON:
        return (
            ClosingDocument.objects.filter(deal=deal)
            .values_list("final_value_base", flat=True)
            .first()
        )
    if deal.agreed_value_base is not None:
        return deal.agreed_value_base
    latest_sent = (
        Offer.objects.filter(deal=deal, sent_at__isnull=False)
        .order_by("-version")
        .values_list("value_base", flat=True)
        .first()
    )
    if latest_sent is not None:
        return latest_sent
    return deal.estimated_value_base


#: The fields a loss writes and a reopening clears.
OUTCOME_FIELDS = ("status", "lost_at", "lost_reason", "lost_stage", "lost_note")


def _history(deal, event, from_stage, to_stage, at, by, entered_at, **extra):
    """A stage-history row at ``at``: the caller has set ``deal.stage_changed_at`` to it
    (no history moment precedes the deal's latest event, ``_not_before``)."""
    return StageHistory(
        deal=deal,
        event=event,
        from_stage=from_stage,
        to_stage=to_stage,
        at=at,
        by=by,
        entered_at=entered_at,
        **extra,
    )


# Creation -----------------------------------------------------------------------------


def create_deal(
    *,
    by,
    owner,
    company,
    title,
    at=None,
    channel=None,
    contact=None,
    currency=None,
    estimated_value=None,
    first_touch_at=None,
    external_id=None,
    **details,
):
    """Record a lead: the deal enters ``lead`` at ``at``."""
    at = _moment(at, field="entered_lead_at")
    if first_touch_at is not None:
        first_touch_at = _moment(first_touch_at, field="first_touch_at")
        if first_touch_at > at:
            raise DomainError(
                {
                    "first_touch_at": _(
                        "The first marketing touch cannot follow the lead's creation."
                    )
                },
                code="out_of_order",
            )
    if contact is not None and contact.company_id != company.pk:
        raise DomainError({"contact": _("The contact works for another company.")}, code="contact")
    unknown = set(details) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"create_deal() got unexpected fields: {sorted(unknown)}")
    deal = Deal(
        title=title,
        company=company,
        contact=contact,
        channel=channel,
        owner=owner,
        created_by=by,
        external_id=external_id or None,
        estimated_value=_money(estimated_value, "estimated_value"),
        first_touch_at=first_touch_at,
        entered_lead_at=at,
        last_event_at=at,
        stage_changed_at=at,
        stage=Stage.LEAD,
        status=Status.OPEN,
        **details,
    )
    if currency:
        deal.currency = currency
    deal.full_clean(validate_constraints=False)
    with transaction.atomic():
        deal.estimated_value_base = to_base(deal.estimated_value, deal.currency, at)
        deal.current_value_base = deal.estimated_value_base
        deal.updated_at = timezone.now()
        deal.save()
        _history(deal, StageEvent.CREATED, None, Stage.LEAD, at, by, deal.updated_at).save()
        pending.created(deal.pk)
        mark_deal(deal)
    return deal


# Transitions --------------------------------------------------------------------------


def move_forward(deal, to_stage, *, by, at=None, expected_version=None):
    """Move ``deal`` forward to ``to_stage``. Stages in between are stamped with the same
    moment and recorded as skipped. Entering (or skipping) ``negotiation`` requires a sent
    offer; entering ``closing`` requires agreed terms."""
    target = Stage(to_stage)
    with _changing(deal, expected_version):
        at = _moment(at)
        _require_open(deal)
        if not stages.is_forward(deal.stage, target):
            raise DomainError(
                {
                    "stage": _(
                        "A deal only moves forward: from %(current)s it cannot go to %(target)s."
                    )
                    % {"current": Stage(deal.stage).label, "target": target.label}
                },
                code="backward",
            )
        _not_before(deal, at)
        if at <= deal.stamp(deal.stage) and not (
            deal.stage == Stage.LEAD and at == deal.entered_lead_at
        ):
            # A stay has a positive length; passing a stage in no time is a skip, and
            # the KPIs tell skips from stays by equal stamps (docs/kpis.md, "Skips").
            # ``lead`` cannot be skipped, so a lead qualified the moment it was recorded
            # (as imported history often says) is a stay of no length, not a skip.
            raise DomainError(
                {"at": _("A deal must spend some time in a stage before it moves on.")},
                code="no_stay",
            )
        path = [*stages.between(deal.stage, target), target]
        if (
            stages.index(target) >= stages.index(Stage.NEGOTIATION)
            and not deal.offers.filter(sent_at__isnull=False, sent_at__lte=at).exists()
        ):
            raise DomainError(
                {"stage": _("Negotiation starts from a sent offer: send an offer first.")},
                code="no_sent_offer",
            )
        if target == Stage.CLOSING and deal.agreed_value is None:
            raise DomainError(
                {"stage": _("Closing needs agreed terms: record the agreed value first.")},
                code="no_agreed_terms",
            )
        moves = []
        previous = deal.stage
        for stage in path:
            setattr(deal, stages.stamp_field(stage), at)
            moves.append(
                (StageEvent.MOVED if stage == target else StageEvent.SKIPPED, previous, stage)
            )
            previous = stage
        deal.stage = target
        deal.last_event_at = deal.stage_changed_at = at
        now = _write(
            deal,
            [
                "stage",
                "last_event_at",
                "stage_changed_at",
                *(stages.stamp_field(s) for s in path),
            ],
        )
        StageHistory.objects.bulk_create(
            _history(deal, event, from_stage, to_stage, at, by, now)
            for event, from_stage, to_stage in moves
        )
    return deal


def mark_lost(deal, reason, *, by, at=None, note="", expected_version=None):
    """Lose an open deal at its current stage for a reason from the managed list."""
    with _changing(deal, expected_version):
        at = _moment(at)
        _require_open(deal)
        if not isinstance(reason, LostReason):
            raise DomainError({"lost_reason": _("Choose why the deal was lost.")}, code="required")
        _not_before(deal, at)
        deal.status = Status.LOST
        deal.lost_at = at
        deal.lost_reason = reason
        deal.lost_stage = deal.stage
        deal.lost_note = note or ""
        deal.last_event_at = deal.stage_changed_at = at
        now = _write(deal, [*OUTCOME_FIELDS, "last_event_at", "stage_changed_at"])
        _history(
            deal,
            StageEvent.LOST,
            deal.stage,
            deal.stage,
            at,
            by,
            now,
            lost_reason=reason,
            note=note or "",
        ).save()
    return deal


def disqualify(deal, *, by, at=None, note="", expected_version=None):
    """Disqualifying a lead is losing it at ``qualification`` for "not qualified"."""
    reason = LostReason.objects.get(code=LostReason.NOT_QUALIFIED)
    with _changing(deal, expected_version):
        if deal.stage == Stage.LEAD:
            move_forward(deal, Stage.QUALIFICATION, by=by, at=at)
            at = deal.last_event_at
        elif deal.stage != Stage.QUALIFICATION:
            raise DomainError(
                _("Only a lead in qualification can be disqualified; mark it lost instead."),
                code="not_qualifying",
            )
        mark_lost(deal, reason, by=by, at=at, note=note)
    return deal


def reopen(deal, *, by, at=None, expected_version=None):
    """A manager or admin reopens a lost deal: it returns, open, to the stage it was lost
    at. The history keeps both the loss and the reopening."""
    with _changing(deal, expected_version):
        if by is None or not by.can_reopen:
            raise DomainError(_("Only a manager or an admin can reopen a deal."), code="forbidden")
        at = _moment(at)
        if deal.status != Status.LOST:
            raise DomainError(_("Only a lost deal can be reopened."), code="not_lost")
        _not_before(deal, at)
        # The loss no longer counts in its period: that period is stale too.
        mark_deal(deal, deal.lost_at, since=deal.lost_at)
        deal.status = Status.OPEN
        deal.lost_at = None
        deal.lost_reason = None
        deal.lost_stage = None
        deal.lost_note = ""
        deal.last_event_at = deal.stage_changed_at = at
        now = _write(deal, [*OUTCOME_FIELDS, "last_event_at", "stage_changed_at"])
        _history(deal, StageEvent.REOPENED, deal.stage, deal.stage, at, by, now).save()
    return deal


def win(deal, *, by, at=None, expected_version=None):
    """The closing document is signed (contract) or paid (pro-forma): the deal is won."""
    with _changing(deal, expected_version):
        at = _moment(at)
        _require_open(deal)
        if deal.stage != Stage.CLOSING:
            raise DomainError(
                _("A deal is won from the closing stage, with its pro-forma or contract."),
                code="not_closing",
            )
        document = ClosingDocument.objects.filter(deal=deal).first()
        if document is None:
            raise DomainError(
                _("Record the pro-forma invoice or contract before marking the deal won."),
                code="no_document",
            )
        _not_before(deal, at)
        if local_date(at) < document.issue_date:
            raise DomainError(
                {"at": _("The deal cannot be won before its document was issued.")},
                code="out_of_order",
            )
        closed_by = "signed_at" if document.document_type == DocumentType.CONTRACT else "paid_at"
        before = {closed_by: getattr(document, closed_by)}
        setattr(document, closed_by, at)
        document.final_value_base = to_base(document.final_value, deal.currency, at)
        document.save(update_fields=["signed_at", "paid_at", "final_value_base"])
        deal.status = Status.WON
        deal.won_at = at
        deal.last_event_at = deal.stage_changed_at = at
        deal.current_value_base = document.final_value_base
        now = _write(
            deal, ["status", "won_at", "last_event_at", "stage_changed_at", "current_value_base"]
        )
        _history(deal, StageEvent.WON, deal.stage, deal.stage, at, by, now).save()
        DealChange.objects.bulk_create(
            _changes(deal, document, before, [closed_by], by=by, at=at, entered_at=now)
        )
    return deal


# Stage data ---------------------------------------------------------------------------


def agree_terms(deal, *, agreed_value, by, discount_pct=None, at=None, expected_version=None):
    """Record the terms agreed with the client: what lets a deal enter ``closing``."""
    with _changing(deal, expected_version):
        at = _moment(at)
        _require_open(deal)
        if stages.index(deal.stage) < stages.index(Stage.OFFER):
            raise DomainError(
                _("Terms are agreed on an offer: the deal has not reached the offer stage."),
                code="too_early",
            )
        _not_before(deal, at)
        before = {"agreed_value": deal.agreed_value, "discount_pct": deal.discount_pct}
        deal.agreed_value = _money(agreed_value, "agreed_value")
        if deal.agreed_value is None:
            raise DomainError({"agreed_value": _("Enter the agreed value.")}, code="required")
        if discount_pct is not None:
            deal.discount_pct = _percent(discount_pct, "discount_pct")
        deal.agreed_value_base = to_base(deal.agreed_value, deal.currency, at)
        deal.agreed_at = at
        deal.last_event_at = at
        deal.current_value_base = current_value_base(deal)
        now = _write(
            deal,
            [
                "agreed_value",
                "agreed_value_base",
                "agreed_at",
                "discount_pct",
                "last_event_at",
                "current_value_base",
            ],
        )
        _record_changes(deal, before, by, at, now)
    return deal


def start_offer(deal, *, value, by, at=None, prep_started_at=None, notes="", expected_version=None):
    """Start preparing a new offer version. The first version's preparation starts when
    the deal entered ``offer``; a later one when it is started. A version started during
    negotiation is a revision: the deal does not move."""
    with transaction.atomic():
        pending.capture(deal.pk)
        deal = Deal.objects.select_for_update().get(pk=deal.pk)
        _check_version(deal, expected_version)
        at = _moment(at)
        _require_open(deal)
        # domain.md: preparation of the first version starts when the deal enters
        # ``offer``; a version started earlier would have no stage to belong to.
        if stages.index(deal.stage) < stages.index(Stage.OFFER):
            raise DomainError(
                _("Offers are prepared from the offer stage: move the deal to it first."),
                code="too_early",
            )
        value = _money(value, "value")
        if value is None:
            raise DomainError({"value": _("Enter the offer's value.")}, code="required")
        last_version = deal.offers.aggregate(v=Max("version"))["v"] or 0
        if prep_started_at is None:
            prep_started_at = (
                deal.entered_offer_at if (last_version == 0 and deal.entered_offer_at) else at
            )
        prep_started_at = _moment(prep_started_at, field="prep_started_at")
        if prep_started_at < deal.entered_offer_at:
            raise DomainError(
                {
                    "prep_started_at": _(
                        "An offer cannot be prepared before the deal entered the offer stage."
                    )
                },
                code="out_of_order",
            )
        offer = Offer(
            deal=deal,
            version=last_version + 1,
            value=value,
            value_base=to_base(value, deal.currency, prep_started_at),
            prep_started_at=prep_started_at,
            status=OfferStatus.DRAFT,
            notes=notes,
            created_by=by,
        )
        offer.save()
        mark_deal(deal)
    return offer


def _deal_of(offer, expected_version):
    pending.capture(offer.deal_id)
    deal = Deal.objects.select_for_update().get(pk=offer.deal_id)
    _check_version(deal, expected_version)
    _require_open(deal)
    return deal


def send_offer(offer, *, by, at=None, expected_version=None):
    """Send a draft offer. Earlier versions are superseded; the deal's current value
    follows the latest sent offer until terms are agreed."""
    with transaction.atomic():
        deal = _deal_of(offer, expected_version)
        at = _moment(at, field="sent_at")
        offer.refresh_from_db()
        if offer.status != OfferStatus.DRAFT:
            raise DomainError(_("Only a draft offer can be sent."), code="not_draft")
        if at < offer.prep_started_at:
            raise DomainError(
                {"sent_at": _("An offer cannot be sent before its preparation started.")},
                code="out_of_order",
            )
        offer.sent_at = at
        offer.sent_by = by
        offer.status = OfferStatus.SENT
        offer.value_base = to_base(offer.value, deal.currency, at)
        offer.save(update_fields=["sent_at", "sent_by", "status", "value_base"])
        Offer.objects.filter(
            deal=deal,
            version__lt=offer.version,
            status__in=[OfferStatus.DRAFT, OfferStatus.SENT],
        ).update(status=OfferStatus.SUPERSEDED)
        # A derived value, not an edit: it does not move the deal's version, so a form
        # opened before the offer was sent is not refused for it.
        Deal.objects.filter(pk=deal.pk).update(current_value_base=current_value_base(deal))
        mark_deal(deal)
    return offer


def _respond(offer, status, *, by, at, expected_version):
    with transaction.atomic():
        deal = _deal_of(offer, expected_version)
        at = _moment(at, field="responded_at")
        offer.refresh_from_db()
        if offer.status != OfferStatus.SENT:
            raise DomainError(_("Only a sent offer can be accepted or rejected."), code="not_sent")
        if at < offer.sent_at:
            raise DomainError(
                {"responded_at": _("The client cannot respond before the offer was sent.")},
                code="out_of_order",
            )
        offer.status = status
        offer.responded_at = at
        offer.responded_by = by
        offer.save(update_fields=["status", "responded_at", "responded_by"])
        mark_deal(deal)
    return deal


def accept_offer(offer, *, by, at=None, expected_version=None):
    """The client accepts a sent offer. Unless terms were agreed already, its value
    becomes the agreed value."""
    with transaction.atomic():
        deal = _respond(
            offer, OfferStatus.ACCEPTED, by=by, at=at, expected_version=expected_version
        )
        if deal.agreed_value is None and stages.index(deal.stage) >= stages.index(Stage.OFFER):
            agree_terms(deal, agreed_value=offer.value, by=by, at=offer.responded_at)
    return offer


def reject_offer(offer, *, by, at=None, expected_version=None):
    _respond(offer, OfferStatus.REJECTED, by=by, at=at, expected_version=expected_version)
    return offer


def add_round(
    deal, *, held_at, proposed_value, by, discount_pct=0, notes="", expected_version=None
):
    """Log one negotiation round: its date, the value proposed and the discount."""
    with transaction.atomic():
        pending.capture(deal.pk)
        deal = Deal.objects.select_for_update().get(pk=deal.pk)
        _check_version(deal, expected_version)
        _require_open(deal)
        if deal.stage != Stage.NEGOTIATION:
            raise DomainError(
                _("Negotiation rounds are logged while the deal is in negotiation."),
                code="not_negotiating",
            )
        held_at = _moment(held_at, field="held_at")
        if held_at < deal.entered_negotiation_at:
            raise DomainError(
                {"held_at": _("A round cannot precede the start of the negotiation.")},
                code="out_of_order",
            )
        proposed_value = _money(proposed_value, "proposed_value")
        if proposed_value is None:
            raise DomainError({"proposed_value": _("Enter the proposed value.")}, code="required")
        number = (deal.rounds.aggregate(n=Max("number"))["n"] or 0) + 1
        mark_deal(deal)
        return NegotiationRound.objects.create(
            deal=deal,
            number=number,
            held_at=held_at,
            proposed_value=proposed_value,
            proposed_value_base=to_base(proposed_value, deal.currency, held_at),
            discount_pct=_percent(discount_pct or 0, "discount_pct"),
            notes=notes,
            by=by,
        )


def log_activity(deal, *, kind, held_at, by, outcome="", notes="", expected_version=None):
    """Log a call, e-mail, meeting or audit held with the client. With
    ``expected_version``, refused (StaleDealError) when the deal changed since the
    caller read it, as every other change of a deal page is."""
    held_at = _moment(held_at, field="held_at")
    if held_at < deal.entered_lead_at:
        raise DomainError(
            {"held_at": _("An activity cannot precede the lead's creation.")}, code="out_of_order"
        )
    activity = Activity(deal=deal, kind=kind, held_at=held_at, outcome=outcome, notes=notes, by=by)
    activity.full_clean(exclude=["deal", "by"], validate_constraints=False)
    with transaction.atomic():
        pending.capture(deal.pk)
        if expected_version is not None:
            _check_version(
                Deal.objects.select_for_update().only("version").get(pk=deal.pk), expected_version
            )
        activity.save()
        # Back-dated activities are allowed: the deal keeps the latest one held.
        Deal.objects.filter(pk=deal.pk).filter(
            Q(last_activity_at__isnull=True) | Q(last_activity_at__lt=held_at)
        ).update(last_activity_at=held_at)
        if deal.last_activity_at is None or deal.last_activity_at < held_at:
            deal.last_activity_at = held_at
        mark_deal(deal)
    return activity


def save_closing_document(
    deal, *, document_type, issue_date, final_value, by, number="", expected_version=None
):
    """Record (or correct) the pro-forma invoice or contract of a deal in ``closing``."""
    with _changing(deal, expected_version):
        _require_open(deal)
        if deal.stage != Stage.CLOSING:
            raise DomainError(
                _("The pro-forma invoice or contract is recorded in the closing stage."),
                code="not_closing",
            )
        final_value = _money(final_value, "final_value")
        if final_value is None:
            raise DomainError({"final_value": _("Enter the final value.")}, code="required")
        if issue_date is None:
            raise DomainError({"issue_date": _("Enter the issue date.")}, code="required")
        if issue_date > timezone.localdate():
            raise DomainError(
                {"issue_date": _("A document cannot be issued in the future.")}, code="future"
            )
        if issue_date < local_date(deal.entered_closing_at):
            raise DomainError(
                {"issue_date": _("The document cannot be issued before the deal entered closing.")},
                code="out_of_order",
            )
        if document_type not in DocumentType.values:
            raise DomainError(
                {"document_type": _("Choose a pro-forma invoice or a contract.")}, code="invalid"
            )
        document, created = ClosingDocument.objects.get_or_create(
            deal=deal,
            defaults={
                "document_type": document_type,
                "issue_date": issue_date,
                "final_value": final_value,
                "final_value_base": Decimal(0),
            },
        )
        if created:
            before = NO_DOCUMENT
        else:
            before = {name: getattr(document, name) for name in DOCUMENT_TRACKED_FIELDS}
        document.document_type = document_type
        document.issue_date = issue_date
        document.number = number or ""
        document.final_value = final_value
        document.final_value_base = to_base(final_value, deal.currency, issue_date)
        document.save()
        # The deal's version moves too: a form opened before this change is stale.
        now = _write(deal, [])
        # The edit has no business moment of its own (the issue date is a field of it):
        # it is dated when it is entered.
        DealChange.objects.bulk_create(
            _changes(deal, document, before, DOCUMENT_TRACKED_FIELDS, by=by, at=now, entered_at=now)
        )
    return document


def update_deal(deal, *, by, expected_version=None, **changes):
    """Edit a deal's details. Edits of tracked fields are logged with who, when, the old
    and the new value. Stage, status and outcomes change only through transitions."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"update_deal() cannot change: {sorted(unknown)}")
    with _changing(deal, expected_version):
        before = {name: getattr(deal, name) for name in EDITABLE_FIELDS}
        for name, value in changes.items():
            if name in ("estimated_value",):
                value = _money(value, name)
            elif name == "discount_pct":
                value = _percent(value, name)
            setattr(deal, name, value)
        changed = [name for name in changes if before[name] != getattr(deal, name)]
        if not changed:
            return deal
        if "currency" in changed and (
            deal.agreed_value is not None
            or deal.offers.exists()
            or deal.rounds.exists()
            or ClosingDocument.objects.filter(deal=deal).exists()
        ):
            raise DomainError(
                {
                    "currency": _(
                        "The currency cannot change once offers or terms were recorded in it."
                    )
                },
                code="currency_locked",
            )
        if deal.first_touch_at is not None and deal.first_touch_at > deal.entered_lead_at:
            raise DomainError(
                {
                    "first_touch_at": _(
                        "The first marketing touch cannot follow the lead's creation."
                    )
                },
                code="out_of_order",
            )
        if deal.contact_id is not None and deal.contact.company_id != deal.company_id:
            raise DomainError(
                {"contact": _("The contact works for another company.")}, code="contact"
            )
        deal.full_clean(validate_unique=False, validate_constraints=False)
        # A new expected close date moves the deal out of its old period's pipeline.
        mark_deal(deal, before["expected_close_date"])
        fields = list(changed)
        if {"estimated_value", "currency"} & set(changed):
            deal.estimated_value_base = to_base(
                deal.estimated_value, deal.currency, deal.entered_lead_at
            )
            deal.current_value_base = current_value_base(deal)
            fields += ["estimated_value_base", "current_value_base"]
        now = _write(deal, fields)
        _record_changes(deal, before, by, now, now)
    return deal
