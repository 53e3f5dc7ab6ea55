"""The rep workspace: the board, the deal list, the new lead form and the deal page.

Every row comes through ``visible_to(user)`` (another rep's deal is a 404 on every URL)
and every change through a function of ``funnel/domain.py``. A form posted from a stale
page (the deal's version moved on) changes nothing and shows the current data.
"""

import datetime
from decimal import Decimal

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Case, Count, F, Q, Sum, When, Window
from django.db.models.functions import RowNumber
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from accounts.access import get_visible_or_404
from funnel import domain, stages
from funnel.domain import DomainError, StaleDealError
from funnel.forms import (
    ActivityForm,
    ClosingForm,
    DealFilter,
    DetailsForm,
    LeadForm,
    LostForm,
    MoveForm,
    NeedsForm,
    OfferForm,
    QualificationForm,
    RoundForm,
    TermsForm,
    VersionForm,
    moment_on,
    visible_owners,
)
from funnel.models import (
    ClosingDocument,
    Company,
    Contact,
    Deal,
    OfferStatus,
    StageEvent,
)
from funnel.stages import ORDER, Stage
from kpis.models import KpiSnapshot, StageSetting
from kpis.periods import Grain

#: Cards shown per board column; the rest are one click away in the list. One windowed
#: query fetches them, so the board costs the same for 10 deals and for 100,000.
BOARD_CARDS_PER_STAGE = 30
LIST_PAGE_SIZE = 25


def _deals(user):
    return Deal.objects.visible_to(user).select_related("company", "owner")


def _current_stamp():
    """The moment a deal entered its current stage, as one SQL expression."""
    return Case(*(When(stage=s, then=F(stages.stamp_field(s))) for s in ORDER))


def _with_idle_since(queryset):
    """Annotate when the deal entered its current stage. It is idle since the later of
    its latest stage change and its latest activity (the ``stalled_deals`` rule of
    domain.md), both kept on the deal row (``stage_changed_at``, ``last_activity_at``)."""
    return queryset.annotate(stage_entered_at=_current_stamp())


class StallLimits:
    """Days after which an open deal counts as stalled, per stage and owner's team: the
    admin's per-stage limit, else twice the median stay in the stage of the owner's
    team, else of the whole company, read from the latest yearly KPI snapshots (this
    year's or last year's). With no limit and no measured stay a deal is never stalled.

    Two queries, whatever the number of deals or teams."""

    def __init__(self, today=None):
        today = today or timezone.localdate()
        self.explicit = dict(
            StageSetting.objects.filter(stall_limit_days__isnull=False).values_list(
                "stage", "stall_limit_days"
            )
        )
        codes = {f"time_in_{s.value}_days_median": s.value for s in ORDER}
        self.medians = {}
        rows = (
            KpiSnapshot.objects.filter(
                kpi__in=codes,
                grain=Grain.YEAR,
                breakdown="",
                value__isnull=False,
                period_start__gte=datetime.date(today.year - 1, 1, 1),
                period_start__lte=today,
            )
            .filter(Q(slice="company") | Q(slice__startswith="team:"))
            .order_by("period_start")
            .values_list("kpi", "slice", "value")
        )
        for kpi, slice_key, value in rows:  # the latest year wins
            self.medians[(codes[kpi], slice_key)] = value

    def days(self, stage, team_id):
        if stage in self.explicit:
            return Decimal(self.explicit[stage])
        median = self.medians.get((stage, f"team:{team_id}"))
        if median is None:
            median = self.medians.get((stage, "company"))
        return None if median is None else 2 * median


def _decorate(deals, now, limits=None):
    """Days in stage, days idle and the stalled flag of each deal (no queries).

    Days are counted as calendar days in the organisation's time zone, as a user reads
    them: a deal that entered its stage on Monday has been there one day on Tuesday,
    whatever the hour. The stalled flag compares the exact time with the limit."""
    today = timezone.localdate(now)
    for deal in deals:
        deal.days_in_stage = (today - timezone.localdate(deal.stage_entered_at)).days
        idle_since = max(d for d in (deal.stage_changed_at, deal.last_activity_at) if d)
        deal.days_idle = (today - timezone.localdate(idle_since)).days
        deal.stall_limit = limits.days(deal.stage, deal.owner.team_id) if limits else None
        deal.is_stalled = (
            deal.is_open
            and deal.stall_limit is not None
            and Decimal((now - idle_since).total_seconds()) / 86400 > deal.stall_limit
        )
    return deals


def _owner_filter(request, queryset):
    """Managers and admins may narrow a page to one owner among those they can see."""
    user = request.user
    if not (user.is_manager or user.is_lejek_admin):
        return queryset, None, []
    owners = list(visible_owners(user))
    chosen = next((o for o in owners if str(o.pk) == request.GET.get("owner")), None)
    if chosen is not None:
        queryset = queryset.filter(owner=chosen)
    return queryset, chosen, owners


# Pages --------------------------------------------------------------------------------


@login_required
def board(request):
    """One column per stage of the user's open deals; the longest in their stage first."""
    now = timezone.now()
    deals, owner, owners = _owner_filter(request, _deals(request.user).open())
    totals = {
        row["stage"]: row
        for row in deals.order_by()
        .values("stage")
        .annotate(n=Count("pk"), value=Sum("current_value_base"))
    }
    cards = (
        _with_idle_since(deals)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("stage")],
                order_by=[_current_stamp().asc(), F("pk").asc()],
            )
        )
        .filter(rank__lte=BOARD_CARDS_PER_STAGE)
        .order_by("stage_entered_at", "pk")
    )
    by_stage = {s: [] for s in ORDER}
    for deal in _decorate(cards, now, StallLimits()):
        by_stage[deal.stage].append(deal)
    columns = [
        {
            "stage": stage,
            "deals": by_stage[stage],
            "count": totals.get(stage, {}).get("n", 0),
            "value": totals.get(stage, {}).get("value"),
            "hidden": totals.get(stage, {}).get("n", 0) - len(by_stage[stage]),
        }
        for stage in ORDER
    ]
    return render(
        request,
        "funnel/board.html",
        {"columns": columns, "owners": owners, "owner": owner},
    )


home = board


@login_required
def deal_list(request):
    queryset = _with_idle_since(_deals(request.user).select_related("channel"))
    segments = (
        Deal.objects.visible_to(request.user)
        .exclude(segment="")
        .order_by("segment")
        .values_list("segment", flat=True)
        .distinct()
    )
    filterset = DealFilter(
        request.GET or None, queryset=queryset, user=request.user, segments=list(segments)
    )
    deals = filterset.qs
    if not (filterset.is_bound and filterset.form.cleaned_data.get("sort")):
        deals = deals.order_by("-entered_lead_at", "-pk")
    page = Paginator(deals, LIST_PAGE_SIZE).get_page(request.GET.get("page"))
    _decorate(page.object_list, timezone.now())
    return render(
        request,
        "funnel/deal_list.html",
        {"filter": filterset, "page": page, "deals": page.object_list},
    )


@login_required
@require_http_methods(["GET", "POST"])
def new_lead(request):
    form = LeadForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            with transaction.atomic():
                company = Company.objects.filter(name__iexact=data["company_name"]).first()
                if company is None:
                    company = Company.objects.create(
                        name=data["company_name"],
                        industry=data["industry"],
                        segment=data["segment"],
                    )
                contact = None
                if data["contact_last_name"]:
                    contact = Contact.objects.create(
                        company=company,
                        first_name=data["contact_first_name"],
                        last_name=data["contact_last_name"],
                        email=data["contact_email"],
                        phone=data["contact_phone"],
                    )
                first_touch = data["first_touch_on"]
                deal = domain.create_deal(
                    by=request.user,
                    owner=data.get("owner") or request.user,
                    company=company,
                    contact=contact,
                    title=data["title"],
                    channel=data["channel"],
                    currency=data["currency"],
                    estimated_value=data["estimated_value"],
                    first_touch_at=moment_on(first_touch) if first_touch else None,
                    industry=data["industry"] or company.industry,
                    segment=data["segment"] or company.segment,
                )
        except DomainError as exc:
            _add_errors(form, exc, {"first_touch_at": "first_touch_on"})
        else:
            messages.success(request, _("Lead “%(title)s” recorded.") % {"title": deal.title})
            return redirect("funnel:detail", pk=deal.pk)
    return render(request, "funnel/new_lead.html", {"form": form})


def _deal(request, pk):
    return get_visible_or_404(
        Deal.objects.select_related(
            "company", "contact", "channel", "owner", "owner__team", "lost_reason"
        ),
        request.user,
        pk=pk,
    )


def _document(deal):
    try:
        return deal.closing_document
    except ClosingDocument.DoesNotExist:
        return None


def _page_forms(deal, user):
    """The forms the deal page offers for its status and stage, unbound."""
    if not deal.is_open:
        return {"reopen": VersionForm(deal=deal, user=user)} if user.can_reopen else {}
    kw = {"deal": deal, "user": user}
    forms = {"details": DetailsForm(**kw), "activity": ActivityForm(**kw)}
    stage = Stage(deal.stage)
    if stage != Stage.CLOSING:
        forms["move"] = MoveForm(**kw)
    if stage == Stage.QUALIFICATION:
        forms["qualification"] = QualificationForm(**kw)
    if stage in (Stage.LEAD, Stage.QUALIFICATION):
        forms["disqualify"] = VersionForm(**kw)
    if stage == Stage.NEEDS:
        forms["needs"] = NeedsForm(**kw)
    if stage in (Stage.OFFER, Stage.NEGOTIATION):
        forms["offer"] = OfferForm(**kw)
        forms["terms"] = TermsForm(**kw)
        forms["offer_action"] = VersionForm(**kw)
    if stage == Stage.NEGOTIATION:
        forms["round"] = RoundForm(**kw)
    if stage == Stage.CLOSING:
        forms["closing"] = ClosingForm(document=_document(deal), **kw)
    return forms


def _progress(deal, history):
    skipped = {row.to_stage for row in history if row.event == StageEvent.SKIPPED}
    current = stages.index(deal.stage)
    steps = []
    for i, (stage, entered) in enumerate(deal.stage_stamps()):
        if i == current:
            state = {"won": "won", "lost": "lost"}.get(deal.status, "current")
        elif entered is None:
            state = "ahead"
        elif stage in skipped:
            state = "skipped"
        else:
            state = "done"
        steps.append({"stage": stage, "entered": entered, "state": state})
    return steps


def _render_deal(request, deal, *, bound=None, conflict=None, status=200):
    user = request.user
    history = list(deal.history.select_related("by", "lost_reason"))
    forms = _page_forms(deal, user)
    forms.update(bound or {})
    context = {
        "deal": deal,
        "document": _document(deal),
        "history": history,
        "progress": _progress(deal, history),
        "activities": deal.activities.select_related("by"),
        "offers": list(deal.offers.select_related("sent_by", "responded_by")),
        "rounds": deal.rounds.select_related("by"),
        "changes": deal.changes.select_related("by") if user.can_reopen else None,
        "forms": forms,
        "conflict": conflict,
        "now": timezone.now(),
        "offer_statuses": OfferStatus,
    }
    return render(request, "funnel/deal_detail.html", context, status=status)


@login_required
def deal_detail(request, pk):
    return _render_deal(request, _deal(request, pk))


# Changes ------------------------------------------------------------------------------


def _add_errors(form, exc, mapping=None):
    """Show a domain refusal on the form: on its field when the form has it."""
    mapping = mapping or getattr(form, "domain_fields", {})
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for field, errors in exc.error_dict.items():
        name = mapping.get(field, field)
        if name not in form.fields or name == "version":
            name = None
        for error in errors:
            form.add_error(name, error)


def _is_stale(form, deal):
    """Whether the form was posted from a page showing an older version of ``deal``.

    Checked before the form is validated: its choices follow the deal's current state
    (the stages ahead, say), so a page that missed a move would otherwise meet "Select
    a valid choice" instead of being told the deal changed. A missing or malformed
    version is left to the form's validation."""
    try:
        return int(form.data.get("version", "")) != deal.version
    except (TypeError, ValueError):
        return False


def _submitted(form):
    """What the user typed, for the conflict message: label and value of each field.

    A value the form no longer accepts (a stage the deal has moved past) is shown as
    posted, with its stage label when it names one."""
    form.is_valid()
    stage_labels = dict(Stage.choices)
    out = []
    for name, field in form.fields.items():
        if name in ("version", "confirm"):
            continue
        value = form.cleaned_data[name] if name in form.cleaned_data else form[name].value()
        if value in (None, ""):
            continue
        if hasattr(field, "choices"):
            value = dict(field.choices).get(str(value)) or stage_labels.get(str(value), value)
        out.append((field.label, value))
    return out


def _conflict(request, pk, form):
    """The deal page with its current data and what the stale form submitted (409)."""
    return _render_deal(request, _deal(request, pk), conflict=_submitted(form), status=409)


def _change(request, pk, key, form_class, perform, success, form_kwargs=None):
    """Run one change of the deal page: validate ``form_class``, call ``perform(deal,
    data)`` (domain functions) in one transaction, and answer with a redirect, the page
    with the form's errors, or the conflict page (409) when the page was stale."""
    deal = _deal(request, pk)
    if request.method != "POST":
        return redirect("funnel:detail", pk=deal.pk)
    form = form_class(request.POST, deal=deal, user=request.user, **(form_kwargs or {}))
    if _is_stale(form, deal):
        return _conflict(request, pk, form)
    if form.is_valid():
        try:
            with transaction.atomic():
                perform(deal, form)
        except StaleDealError:
            # The deal moved on between the check above and the domain's locked read.
            return _conflict(request, pk, form)
        except DomainError as exc:
            deal = _deal(request, pk)
            form.deal = deal
            _add_errors(form, exc)
        else:
            messages.success(request, success)
            return redirect(reverse("funnel:detail", args=[deal.pk]) + f"#{key}")
    return _render_deal(request, deal, bound={key: form})


@login_required
def edit_details(request, pk):
    def perform(deal, form):
        data = form.cleaned_data
        changes = {
            "title": data["title"],
            "channel": data["channel"],
            "estimated_value": data["estimated_value"],
            "expected_close_date": data["expected_close_date"],
        }
        if "owner" in form.fields:
            changes["owner"] = data["owner"]
        domain.update_deal(deal, by=request.user, expected_version=data["version"], **changes)

    return _change(request, pk, "details", DetailsForm, perform, _("Deal details saved."))


def _update(request, fields):
    """A change that edits some of the deal's captured fields through update_deal."""

    def perform(deal, form):
        data = form.cleaned_data
        domain.update_deal(
            deal, by=request.user, expected_version=data["version"], **{f: data[f] for f in fields}
        )

    return perform


@login_required
def save_qualification(request, pk):
    perform = _update(request, QualificationForm.FIELDS)
    return _change(
        request,
        pk,
        "qualification",
        QualificationForm,
        perform,
        _("Qualification answers saved."),
    )


@login_required
def save_needs(request, pk):
    perform = _update(request, NeedsForm.FIELDS)
    return _change(request, pk, "needs", NeedsForm, perform, _("Needs saved."))


@login_required
def log_activity(request, pk):
    def perform(deal, form):
        data = form.cleaned_data
        domain.log_activity(
            deal,
            kind=data["kind"],
            held_at=data["held_at"],
            outcome=data["outcome"],
            notes=data["notes"],
            by=request.user,
            expected_version=data["version"],
        )

    return _change(request, pk, "activity", ActivityForm, perform, _("Activity logged."))


@login_required
def move(request, pk):
    def perform(deal, form):
        domain.move_forward(
            deal,
            form.cleaned_data["to_stage"],
            by=request.user,
            expected_version=form.cleaned_data["version"],
        )

    return _change(request, pk, "move", MoveForm, perform, _("Deal moved forward."))


@login_required
def start_offer(request, pk):
    def perform(deal, form):
        domain.start_offer(
            deal,
            value=form.cleaned_data["value"],
            notes=form.cleaned_data["notes"],
            by=request.user,
            expected_version=form.cleaned_data["version"],
        )

    return _change(request, pk, "offer", OfferForm, perform, _("New offer version started."))


def _offer_action(request, pk, offer_pk, action, success):
    deal = _deal(request, pk)
    offer = get_object_or_404(deal.offers.all(), pk=offer_pk)

    def perform(deal, form):
        action(offer, by=request.user, expected_version=form.cleaned_data["version"])

    return _change(request, pk, "offer_action", VersionForm, perform, success)


@login_required
def send_offer(request, pk, offer_pk):
    return _offer_action(request, pk, offer_pk, domain.send_offer, _("Offer marked as sent."))


@login_required
def accept_offer(request, pk, offer_pk):
    return _offer_action(request, pk, offer_pk, domain.accept_offer, _("Offer marked as accepted."))


@login_required
def reject_offer(request, pk, offer_pk):
    return _offer_action(request, pk, offer_pk, domain.reject_offer, _("Offer marked as rejected."))


@login_required
def agree_terms(request, pk):
    def perform(deal, form):
        data = form.cleaned_data
        domain.agree_terms(
            deal,
            agreed_value=data["agreed_value"],
            discount_pct=data["discount_pct"],
            by=request.user,
            expected_version=data["version"],
        )

    return _change(request, pk, "terms", TermsForm, perform, _("Agreed terms saved."))


@login_required
def add_round(request, pk):
    def perform(deal, form):
        data = form.cleaned_data
        domain.add_round(
            deal,
            held_at=moment_on(data["held_on"], deal),
            proposed_value=data["proposed_value"],
            discount_pct=data["discount_pct"],
            notes=data["notes"],
            by=request.user,
            expected_version=data["version"],
        )

    return _change(request, pk, "round", RoundForm, perform, _("Negotiation round logged."))


@login_required
def save_closing(request, pk):
    won = []

    def perform(deal, form):
        data = form.cleaned_data
        domain.save_closing_document(
            deal,
            document_type=data["document_type"],
            number=data["number"],
            issue_date=data["issue_date"],
            final_value=data["final_value"],
            by=request.user,
            expected_version=data["version"],
        )
        if data["signed_on"]:
            domain.win(deal, by=request.user, at=moment_on(data["signed_on"], deal))
            won.append(True)

    deal = _deal(request, pk)
    response = _change(
        request,
        pk,
        "closing",
        ClosingForm,
        perform,
        _("Closing document saved."),
        form_kwargs={"document": _document(deal)},
    )
    if won and response.status_code == 302:
        messages.success(request, _("The deal is won. Congratulations!"))
    return response


@login_required
def disqualify(request, pk):
    def perform(deal, form):
        domain.disqualify(deal, by=request.user, expected_version=form.cleaned_data["version"])

    return _change(request, pk, "disqualify", VersionForm, perform, _("The lead was disqualified."))


@login_required
def reopen(request, pk):
    if not request.user.can_reopen:
        _deal(request, pk)  # an outsider still gets the 404, not a hint
        raise Http404

    def perform(deal, form):
        domain.reopen(deal, by=request.user, expected_version=form.cleaned_data["version"])

    return _change(request, pk, "reopen", VersionForm, perform, _("The deal was reopened."))


@login_required
@require_http_methods(["GET", "POST"])
def mark_lost(request, pk):
    """Mark lost in two steps: the form, then a confirmation showing what will be
    recorded. Only the confirmed submission calls the domain."""
    deal = _deal(request, pk)
    if not deal.is_open:
        messages.error(request, _("Only an open deal can be marked lost."))
        return redirect("funnel:detail", pk=deal.pk)
    form = LostForm(request.POST or None, deal=deal, user=request.user)
    template = "funnel/mark_lost.html"
    if request.method == "POST" and _is_stale(form, deal):
        return _conflict(request, pk, form)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if not data["confirm"]:
            return render(request, "funnel/mark_lost_confirm.html", {"deal": deal, "form": form})
        try:
            domain.mark_lost(
                deal,
                data["lost_reason"],
                note=data["note"],
                by=request.user,
                expected_version=data["version"],
            )
        except StaleDealError:
            return _conflict(request, pk, form)
        except DomainError as exc:
            _add_errors(form, exc)
        else:
            messages.success(request, _("The deal was marked lost."))
            return redirect("funnel:detail", pk=deal.pk)
    return render(request, template, {"deal": deal, "form": form})
