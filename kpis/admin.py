"""KPI settings and results in the Django admin.

Admins set the per-stage defaults (win probability, stall limit) and revenue targets
here. Snapshots, dirty days and forecasts are the computation's own rows (a committed
forecast must be entered before its period begins, a frozen one is taken at its
start), so they are shown, never edited.
"""

from django import forms
from django.contrib import admin
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from kpis.models import (
    DirtyDay,
    Forecast,
    HourlyInputs,
    KpiSnapshot,
    LedgerState,
    MaturityHorizon,
    OpenNow,
    PendingChange,
    PeriodMeasures,
    RecomputeJob,
    StageSetting,
    StaleMedian,
    Target,
)
from kpis.periods import start_of


class ViewOnlyMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(StageSetting)
class StageSettingAdmin(admin.ModelAdmin):
    """One row per stage, seeded by a migration: edited, never added or removed."""

    list_display = ("stage", "default_probability_pct", "stall_limit_days")
    list_editable = ("default_probability_pct", "stall_limit_days")
    readonly_fields = ("stage",)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class TargetForm(forms.ModelForm):
    def clean(self):
        cleaned = super().clean()
        grain, start = cleaned.get("grain"), cleaned.get("period_start")
        if grain and start:
            # A period is named by its first day; any day inside it names it too.
            cleaned["period_start"] = start_of(grain, start)
        if cleaned.get("team") and cleaned.get("rep"):
            self.add_error(
                "rep", _("A target is the company's, one team's or one rep's: not both.")
            )
        return cleaned


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    form = TargetForm
    fields = ("grain", "period_start", "team", "rep", "amount", "set_by", "set_at")
    readonly_fields = ("set_by", "set_at")
    list_display = ("period_start", "grain", "team", "rep", "amount", "set_by", "set_at")
    list_filter = ("grain", ("team", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("team", "rep", "set_by")
    search_fields = ("team__name", "rep__username", "rep__last_name")
    date_hierarchy = "period_start"
    autocomplete_fields = ("team", "rep")

    def get_queryset(self, request):
        return super().get_queryset(request).visible_to(request.user)

    def save_model(self, request, obj, form, change):
        obj.set_by = request.user
        obj.set_at = timezone.now()
        super().save_model(request, obj, form, change)


@admin.register(Forecast)
class ForecastAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("period_start", "grain", "team", "kind", "amount", "entered_by", "entered_at")
    list_filter = ("grain", "kind", ("team", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("team", "entered_by")
    date_hierarchy = "period_start"


@admin.register(KpiSnapshot)
class KpiSnapshotAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = (
        "kpi",
        "grain",
        "period_start",
        "slice",
        "breakdown",
        "value",
        "numerator",
        "denominator",
        "computed_at",
    )
    list_filter = ("grain", "kpi")
    search_fields = ("kpi", "slice", "breakdown")
    date_hierarchy = "period_start"


@admin.register(DirtyDay)
class DirtyDayAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("day", "whole", "scope", "generation", "dirtied_at", "claimed_until")
    list_filter = ("whole",)
    date_hierarchy = "day"


@admin.register(PendingChange)
class PendingChangeAdmin(ViewOnlyMixin, admin.ModelAdmin):
    """Deals changed since the ledger took their measures, waiting to be applied as
    their difference (kpis.changes)."""

    list_display = ("deal_id", "created_at")
    search_fields = ("=deal_id",)
    date_hierarchy = "created_at"


@admin.register(StaleMedian)
class StaleMedianAdmin(ViewOnlyMixin, admin.ModelAdmin):
    """Larger periods' medians waiting to be taken again (kpis.recompute)."""

    list_display = ("grain", "period_start", "family", "slice", "claimed_until")
    list_filter = ("grain", "family")


@admin.register(MaturityHorizon)
class MaturityHorizonAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("hour", "days", "computed_at")


@admin.register(HourlyInputs)
class HourlyInputsAdmin(ViewOnlyMixin, admin.ModelAdmin):
    """The trailing statistics an hour's recomputes share (kpis/company.py)."""

    list_display = ("hour", "pipeline_refreshed", "computed_at")


@admin.register(PeriodMeasures)
class PeriodMeasuresAdmin(ViewOnlyMixin, admin.ModelAdmin):
    """The measure ledger (kpis/ledger.py): written by the recomputes only."""

    list_display = ("grain", "period_start", "slice", "breakdown")
    list_filter = ("grain",)
    search_fields = ("slice", "breakdown")
    date_hierarchy = "period_start"


@admin.register(LedgerState)
class LedgerStateAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("built_at", "taken_at", "open_as_of")


@admin.register(OpenNow)
class OpenNowAdmin(ViewOnlyMixin, admin.ModelAdmin):
    """The open deals now per slice (kpis/opennow.py): written by the recomputes only."""

    list_display = ("slice", "stages")
    search_fields = ("slice",)


@admin.register(RecomputeJob)
class RecomputeJobAdmin(admin.ModelAdmin):
    """Full recomputes fanned out to the workers: read-only progress."""

    list_display = ["created_at", "parts", "parts_done", "finished_at"]
    readonly_fields = [
        "created_at",
        "parts",
        "done",
        "claimed",
        "plan",
        "larger_sent",
        "finished_at",
    ]

    @admin.display(description=_("parts done"))
    def parts_done(self, obj):
        return len(obj.done)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
