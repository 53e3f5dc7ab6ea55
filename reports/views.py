"""Manager reports: the funnel overview, one report per stage, company KPIs, the deals
behind every number, targets, CSV exports and "recompute now".

Every page reads stored snapshots (reports/data.py) in a fixed number of queries; the
only rows of deals a report reads are those listed by a drill-down, through
``visible_to``. Who may read which slice is decided in reports/scope.py.
"""

import logging
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from funnel.stages import Stage
from kpis import reading
from kpis.definitions import KPIS
from kpis.drilldown import NoDrillDown, deals_behind
from kpis.models import KpiSnapshot, Target
from kpis.periods import Grain, Period, today
from reports import data, layouts
from reports.exports import csv_response
from reports.forms import TargetForm
from reports.scope import COMBINATION_HELP, Scope, resolve
from reports.tables import FUNNEL_COHORT, FUNNEL_PERIOD, VIEWS, FunnelTable, build_tables

log = logging.getLogger(__name__)

#: Deals listed per drill-down page, and the last page offered (10,000 deals: past it,
#: reading the pages before costs more than exporting the list).
DEALS_PER_PAGE = 50
MAX_PAGE = 200
#: Parameters that choose what a report shows and that every link between reports keeps.
FILTER_PARAMS = ("grain", "period", "since", "team", "rep", "channel", "segment", "industry")


def _filter_query(request, **extra):
    params = {k: request.GET[k] for k in FILTER_PARAMS if request.GET.get(k)}
    params.update({k: v for k, v in extra.items() if v})
    return urlencode(params)


def _nav(request, scope):
    query = _filter_query(request)
    suffix = f"?{query}" if query else ""
    items = [("overview", _("Funnel"), reverse("reports:overview") + suffix)]
    items += [
        (stage.value, str(stage.label), reverse("reports:stage", args=[stage.value]) + suffix)
        for stage in Stage
    ]
    items.append(("company", _("Company KPIs"), reverse("reports:company") + suffix))
    if scope.is_admin or scope.teams:
        items.append(("targets", _("Targets"), reverse("reports:targets") + suffix))
    return items


def _base_context(request, key, title, scope, form, slice_key, period, snapshots, tables):
    export_query = _filter_query(request)
    return {
        "report_key": key,
        "title": title,
        "form": form,
        "scope": scope,
        "slice_key": slice_key,
        "slice_label": scope.label(slice_key),
        "period": period,
        "previous_period": period.previous(),
        "snapshots": snapshots,
        "tables": tables,
        "nav": _nav(request, scope),
        "combination_help": COMBINATION_HELP,
        "export_query": export_query,
        "as_of": data.computed_at(period.grain, period),
        "dirty": reading.is_dirty(period),
        "can_recompute": scope.is_admin or request.user.is_manager,
        "immature": any(r.immature for t in tables if t.kind == layouts.KPIS_TABLE for r in t.rows),
        "trend": snapshots.trend_data(
            [c for t in tables if t.kind == layouts.KPIS_TABLE for c in t.table.codes]
        ),
    }


def _export(request, key, tables, slice_label, period, as_of):
    wanted = request.GET.get("export")
    table = next((t for t in tables if t.key == wanted), None)
    if table is None:
        raise Http404
    meta = [
        (_("Report"), key),
        (_("Table"), str(table.title)),
        (_("Slice"), slice_label),
        (_("Period"), period.label),
        (_("As of"), as_of.isoformat() if as_of else _("never computed")),
    ]
    return csv_response(
        f"{key}-{table.key}-{period.label}", table.csv_header(), table.csv_rows(), meta
    )


def _report(request, key, title, layout):
    scope, form, slice_key, period, trend = resolve(request)
    snapshots = data.Snapshots(period.grain, trend, slice_key, layouts.report_codes(layout))
    tables = build_tables(layout, snapshots, scope, slice_key)
    context = _base_context(request, key, title, scope, form, slice_key, period, snapshots, tables)
    if "export" in request.GET:
        return _export(request, key, tables, context["slice_label"], period, context["as_of"])
    return context


@login_required
@require_GET
def overview(request):
    scope, form, slice_key, period, trend = resolve(request)
    view = request.GET.get("view")
    view = view if view in (FUNNEL_PERIOD, FUNNEL_COHORT) else FUNNEL_PERIOD
    snapshots = data.Snapshots(period.grain, trend, slice_key, layouts.funnel_codes())
    funnel = FunnelTable(snapshots, view, current=period.start <= today() < period.end)
    context = _base_context(
        request,
        "overview",
        _("Funnel overview"),
        scope,
        form,
        slice_key,
        period,
        snapshots,
        [funnel],
    )
    if "export" in request.GET:
        return _export(
            request, "overview", [funnel], context["slice_label"], period, context["as_of"]
        )
    trend_codes = [c for c in layouts.funnel_codes() if c.startswith(("conversion_", "time_in_"))]
    context.update(
        funnel=funnel,
        view=view,
        views=[(code, label, f"?{_filter_query(request, view=code)}") for code, label in VIEWS],
        chart=funnel.chart(),
        trend=snapshots.trend_data(trend_codes),
        immature=view == FUNNEL_COHORT and snapshots.immature[period.start],
    )
    return render(request, "reports/overview.html", context)


@login_required
@require_GET
def stage_report(request, stage):
    try:
        stage = Stage(stage)
    except ValueError as exc:
        raise Http404 from exc
    title = _("Stage report: %(stage)s") % {"stage": stage.label}
    result = _report(request, stage.value, title, layouts.stage_report(stage))
    if not isinstance(result, dict):
        return result
    return render(request, "reports/report.html", result)


@login_required
@require_GET
def company(request):
    result = _report(request, "company", _("Company KPIs"), layouts.COMPANY_REPORT)
    if not isinstance(result, dict):
        return result
    result["attainment"] = _attainment(result["scope"], result["slice_key"], result["snapshots"])
    return render(request, "reports/report.html", result)


def _attainment(scope, slice_key, snapshots):
    """Target attainment of the slice shown and of what it is made of (a team's people,
    the company's teams), as (label, reading) pairs: one query."""
    keys = [slice_key]
    kind, _sep, value = slice_key.partition(":")
    if kind == "company":
        keys += [f"team:{t.pk}" for t in scope.teams]
    elif kind == "team":
        keys += [f"rep:{u.pk}" for u in scope.people if str(u.team_id) == value]
    if kind not in ("company", "team", "rep"):
        return []
    readings = snapshots.other_slices(["target_attainment_pct"], slice_keys=keys)
    return [(scope.label(k), readings[k].get("target_attainment_pct")) for k in keys]


@login_required
@require_GET
def deals(request):
    """The deals behind one number: its numerator's or its denominator's, paginated,
    narrowed to what the user may see."""
    scope = Scope(request.user)
    params = request.GET
    code = params.get("kpi", "")
    if code not in KPIS:
        raise Http404
    kpi = KPIS[code]
    side = params.get("side", "numerator")
    if side not in ("numerator", "denominator") or not data.has_deals(kpi, side):
        raise Http404
    slice_key = scope.check(params.get("slice") or scope.default_slice)
    try:
        period = Period.parse(params.get("grain") or Grain.MONTH, params.get("period") or "")
    except ValueError as exc:
        raise Http404 from exc
    breakdown = params.get("breakdown", "")
    if breakdown and breakdown.split(":", 1)[0] not in kpi.breakdowns:
        raise Http404
    try:
        numerator, denominator = deals_behind(code, period, slice_key, breakdown)
    except NoDrillDown as exc:
        raise Http404 from exc
    chosen = data.deals_for(kpi, side, numerator, denominator)
    if chosen is None:
        raise Http404
    stored = KpiSnapshot.objects.filter(
        kpi=code,
        grain=period.grain,
        period_start=period.start,
        slice=slice_key,
        breakdown=breakdown,
    ).first()
    value, num, den = (
        data.empty(kpi)
        if stored is None
        else (
            stored.value,
            stored.numerator,
            stored.denominator,
        )
    )
    stored_reading = data.Reading(kpi, period, slice_key, breakdown, value, num, den)
    if params.get("format") == "csv":
        return csv_response(
            f"{code}-{side}-{period.label}",
            [
                _("Deal"),
                _("Company"),
                _("Owner"),
                _("Stage"),
                _("Status"),
                _("Current value"),
                _("Created"),
                _("Counted on"),
            ],
            (
                [
                    d.pk,
                    d.title,
                    d.company.name,
                    str(d.owner),
                    d.get_stage_display(),
                    d.get_status_display(),
                    d.current_value_base,
                    timezone.localtime(d.entered_lead_at).date().isoformat(),
                    timezone.localtime(d.counted_at).date().isoformat(),
                ]
                for d in chosen.every(request.user)
            ),
            meta=[
                (_("KPI"), str(kpi.label)),
                (_("Side"), side),
                (_("Slice"), scope.label(slice_key)),
                (_("Breakdown"), breakdown),
                (_("Period"), period.label),
            ],
        )
    page = Window(
        lambda offset, limit: chosen.page(request.user, offset, limit),
        params.get("page"),
        DEALS_PER_PAGE,
    )
    base = {k: params[k] for k in ("kpi", "grain", "period", "slice", "breakdown") if params.get(k)}
    return render(
        request,
        "reports/deals.html",
        {
            "kpi": kpi,
            "side": side,
            "period": period,
            "slice_label": scope.label(slice_key),
            "breakdown": breakdown,
            "page": page,
            "reading": stored_reading,
            "sides": [
                (s, label, f"?{urlencode({**base, 'side': s})}")
                for s, label in (("numerator", _("Numerator")), ("denominator", _("Denominator")))
                if data.has_deals(kpi, s)
            ],
            "page_query": urlencode({**base, "side": side}),
            "csv_query": urlencode({**base, "side": side, "format": "csv"}),
        },
    )


class Window:
    """One page of a drill-down and whether another follows, found by fetching one row
    more than a page (``fetch(offset, limit)``). No ``COUNT`` over the whole list: at a
    million deals, counting a month of a team's leads costs more than the rest of the
    page together, and the stored numerator and denominator above the list already
    give its size. The total is shown once the last page is reached; the CSV export
    has every row."""

    def __init__(self, fetch, number, per_page):
        number = int(number) if str(number or "").isdigit() and int(number) > 0 else 1
        self.number = min(number, MAX_PAGE)
        offset = (self.number - 1) * per_page
        rows = fetch(offset, per_page + 1)
        self.object_list = rows[:per_page]
        # Pages beyond MAX_PAGE are not offered: the CSV export has every deal.
        self.truncated = len(rows) > per_page and self.number == MAX_PAGE
        self.has_next = len(rows) > per_page and not self.truncated
        self.has_previous = self.number > 1
        self.has_other_pages = self.has_next or self.has_previous
        self.start_index = offset + 1 if self.object_list else 0
        self.end_index = offset + len(self.object_list)
        self.total = (
            None if self.has_next or self.truncated or not self.object_list else self.end_index
        )
        if self.number == 1 and not rows:
            self.total = 0

    def next_page_number(self):
        return self.number + 1

    def previous_page_number(self):
        return self.number - 1


def _manager_scope(request):
    scope = Scope(request.user)
    if not (scope.is_admin or scope.teams):
        raise Http404
    return scope


@login_required
@require_http_methods(["GET", "POST"])
def targets(request):
    """Revenue targets per team and rep for one period, with their attainment."""
    scope = _manager_scope(request)
    grain = request.GET.get("grain") if request.GET.get("grain") in Grain.values else Grain.MONTH
    try:
        period = Period.parse(grain, request.GET.get("period") or today().isoformat())
    except ValueError:
        period = Period.containing(grain, today())
    if request.method == "POST":
        form = TargetForm(request.POST, scope=scope)
        if form.is_valid():
            with transaction.atomic():
                target, _created = form.save(request.user)
            messages.success(
                request,
                _("Target for %(scope)s in %(period)s saved: numbers update in a moment.")
                % {
                    "scope": target.rep or target.team or _("the company"),
                    "period": form.period.label,
                },
            )
            return redirect(
                f"{reverse('reports:targets')}?"
                f"{urlencode({'grain': form.period.grain, 'period': form.period.start.isoformat()})}"
            )
    else:
        form = TargetForm(initial={"grain": grain, "period": period.label}, scope=scope)
    rows = list(
        Target.objects.visible_to(request.user)
        .filter(grain=period.grain, period_start=period.start)
        .select_related("team", "rep")
        .order_by("team__name", "rep__username")
    )
    keys = [
        f"rep:{t.rep_id}" if t.rep_id else f"team:{t.team_id}" if t.team_id else "company"
        for t in rows
    ]
    stored = {
        s.slice: s
        for s in KpiSnapshot.objects.filter(
            kpi="target_attainment_pct",
            grain=period.grain,
            period_start=period.start,
            slice__in=keys,
            breakdown="",
        )
    }
    kpi = KPIS["target_attainment_pct"]
    lines = []
    for target, key in zip(rows, keys, strict=True):
        snap = stored.get(key)
        reading_ = data.Reading(
            kpi,
            period,
            key,
            "",
            *((snap.value, snap.numerator, snap.denominator) if snap else data.empty(kpi)),
        )
        lines.append((target, reading_))
    return render(
        request,
        "reports/targets.html",
        {
            "form": form,
            "period": period,
            "lines": lines,
            "nav": _nav(request, scope),
            "report_key": "targets",
            "dirty": reading.is_dirty(period),
            "grains": Grain.choices,
            "grain": period.grain,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def target_delete(request, pk):
    scope = _manager_scope(request)
    try:
        target = Target.objects.visible_to(request.user).select_related("team", "rep").get(pk=pk)
    except Target.DoesNotExist as exc:
        raise Http404 from exc
    period = Period(target.grain, target.period_start)
    back = f"{reverse('reports:targets')}?{urlencode({'grain': target.grain, 'period': target.period_start.isoformat()})}"
    if request.method == "POST":
        target.delete()
        messages.success(request, _("Target removed."))
        return redirect(back)
    return render(
        request,
        "reports/target_delete.html",
        {"target": target, "period": period, "back": back, "nav": _nav(request, scope)},
    )


def _period_from(params):
    grain = params.get("grain")
    if grain not in Grain.values:
        raise Http404
    try:
        return Period.parse(grain, params.get("period") or "")
    except ValueError as exc:
        raise Http404 from exc


@login_required
@require_POST
def recompute(request):
    """Enqueue kpis.recompute_period for one period. Answers JSON to the page's script
    (which then polls ``status``), or redirects back with a message without it."""
    if not (request.user.is_lejek_admin or request.user.is_manager):
        raise Http404
    period = _period_from(request.POST)
    requested_at = timezone.now()
    from kpis.tasks import recompute_period

    try:
        recompute_period.delay(period.grain, period.start.isoformat())
    except Exception:  # the broker is down: say so, lose nothing (the sweep still runs)
        log.exception("could not enqueue kpis.recompute_period for %s", period)
        error = _("The recompute could not be queued now; numbers refresh within minutes anyway.")
        if _wants_json(request):
            return JsonResponse({"queued": False, "error": error}, status=503)
        messages.error(request, error)
    else:
        if _wants_json(request):
            return JsonResponse({"queued": True, "requested_at": requested_at.isoformat()})
        messages.info(request, _("Recompute of %(period)s queued.") % {"period": period.label})
    next_url = request.POST.get("next", "")
    if not next_url.startswith("/reports/") or next_url.startswith("//"):
        next_url = reverse("reports:overview")
    return redirect(next_url)


def _wants_json(request):
    return "application/json" in request.headers.get("Accept", "")


@login_required
@require_GET
def status(request):
    """When the period's numbers were computed and whether changes wait for a recompute."""
    period = _period_from(request.GET)
    at = data.computed_at(period.grain, period)
    return JsonResponse(
        {
            "grain": period.grain,
            "period": period.label,
            "computed_at": at.isoformat() if at else None,
            "dirty": reading.is_dirty(period),
            "now": timezone.now().isoformat(),
        }
    )
