"""The funnel in the Django admin.

Reference data (exchange rates, companies, contacts, channels, spend, sales cost, lost
reasons) is edited here as plain rows. Deals are not: they change only through the
domain functions in ``funnel/domain.py``. Adding a deal calls ``create_deal``, editing
one calls ``update_deal`` with the version the form was loaded with (a stale form is
refused, never saved over someone else's change), and the changelist actions call
``mark_lost``, ``disqualify`` and ``reopen``. Stage, status, stamps and outcomes are
read-only on the form; offers, rounds, activities, the closing document and both logs
are shown, never edited, because their own domain functions create them.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import NON_FIELD_ERRORS, FieldDoesNotExist, ValidationError
from django.db import models
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.text import capfirst
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from accounts.access import user_q
from accounts.models import User
from funnel import domain, stages
from funnel.models import (
    Activity,
    Channel,
    ClosingDocument,
    Company,
    Contact,
    Deal,
    DealChange,
    ExchangeRate,
    LostReason,
    MarketingSpend,
    NegotiationRound,
    Offer,
    SalesCost,
    StageHistory,
)
from funnel.money import to_base
from funnel.stages import Status

# Reference data ------------------------------------------------------------------------


@admin.register(ExchangeRate)
class ExchangeRateAdmin(admin.ModelAdmin):
    list_display = ("currency", "date", "rate")
    list_filter = ("currency",)
    search_fields = ("currency",)
    date_hierarchy = "date"


class ContactInline(admin.TabularInline):
    model = Contact
    fields = ("first_name", "last_name", "position", "email", "phone")
    extra = 0
    show_change_link = True


@admin.register(Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = ("name", "industry", "segment", "tax_id", "churned_at", "created_at")
    list_filter = ("segment", "industry", ("churned_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "tax_id", "website")
    date_hierarchy = "created_at"
    inlines = (ContactInline,)
    # Django 6 makes https the default scheme of a bare "example.com": use it already.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ("last_name", "first_name", "company", "position", "email", "phone")
    list_filter = ("company__segment", "company__industry")
    list_select_related = ("company",)
    search_fields = ("last_name", "first_name", "email", "phone", "company__name")
    autocomplete_fields = ("company",)


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    list_display = ("name", "is_active")
    list_editable = ("is_active",)
    list_filter = ("is_active",)
    search_fields = ("name",)


class BaseAmountForm(forms.ModelForm):
    """Spend and sales cost are booked on a month's first day, with the amount converted
    into the base currency at that date's rate (domain.md, "Money")."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "month" in self.fields:
            self.fields["month"].help_text = _(
                "Any day of the month: the amount is booked on the month's first day."
            )

    def clean_month(self):
        month = self.cleaned_data["month"]
        return month.replace(day=1) if month else month

    def clean(self):
        cleaned = super().clean()
        amount, currency, month = (cleaned.get(f) for f in ("amount", "currency", "month"))
        if amount is not None and currency and month:
            try:
                # Not a form field, so the model validation that follows leaves it be.
                self.instance.amount_base = to_base(amount, currency, month)
            except ValidationError as exc:
                self.add_error("currency", exc)
        return cleaned


@admin.register(MarketingSpend)
class MarketingSpendAdmin(admin.ModelAdmin):
    form = BaseAmountForm
    fields = ("channel", "month", "amount", "currency", "amount_base")
    readonly_fields = ("amount_base",)
    list_display = ("month", "channel", "amount", "currency", "amount_base")
    list_filter = (("channel", admin.RelatedOnlyFieldListFilter), "currency")
    list_select_related = ("channel",)
    search_fields = ("channel__name",)
    date_hierarchy = "month"
    autocomplete_fields = ("channel",)


@admin.register(SalesCost)
class SalesCostAdmin(admin.ModelAdmin):
    form = BaseAmountForm
    fields = ("month", "team", "amount", "currency", "amount_base", "note")
    readonly_fields = ("amount_base",)
    list_display = ("month", "team", "amount", "currency", "amount_base", "note")
    list_filter = (("team", admin.RelatedOnlyFieldListFilter), "currency")
    list_select_related = ("team",)
    search_fields = ("note", "team__name")
    date_hierarchy = "month"
    autocomplete_fields = ("team",)


@admin.register(LostReason)
class LostReasonAdmin(admin.ModelAdmin):
    list_display = ("code", "name_en", "name_pl", "is_active", "position")
    list_editable = ("is_active", "position")
    list_filter = ("is_active",)
    search_fields = ("code", "name_en", "name_pl")

    def get_readonly_fields(self, request, obj=None):
        # The code is the reason's stable key (disqualifying looks "not_qualified" up).
        return ("code",) if obj is not None else ()

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.code == LostReason.NOT_QUALIFIED:
            return False
        return super().has_delete_permission(request, obj)


# Rows the domain functions write: shown, never edited here ----------------------------


class ViewOnlyMixin:
    """No add, change or delete: these rows are written by the domain functions only."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class DealRowAdmin(ViewOnlyMixin, admin.ModelAdmin):
    """Rows of a deal, listed only for the deals the user may see."""

    list_select_related = ("deal",)
    search_fields = ("deal__title", "deal__company__name", "deal__external_id")

    def get_queryset(self, request):
        return super().get_queryset(request).visible_to(request.user)


# ``at`` is the business moment a user gave (it may be back-dated); ``entered_at`` is when
# the server wrote the row. Both logs show both, side by side, and neither is editable.


@admin.register(StageHistory)
class StageHistoryAdmin(DealRowAdmin):
    fields = (
        "deal",
        "event",
        "from_stage",
        "to_stage",
        "at",
        "entered_at",
        "by",
        "lost_reason",
        "note",
    )
    list_display = (
        "at",
        "entered_at",
        "deal",
        "event",
        "from_stage",
        "to_stage",
        "lost_reason",
        "by",
    )
    list_filter = ("event", "to_stage", ("lost_reason", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("deal", "by", "lost_reason")
    date_hierarchy = "at"


@admin.register(DealChange)
class DealChangeAdmin(DealRowAdmin):
    fields = ("deal", "field", "old_value", "new_value", "at", "entered_at", "by")
    list_display = ("at", "entered_at", "deal", "field", "old_value", "new_value", "by")
    list_filter = ("field",)
    list_select_related = ("deal", "by")
    date_hierarchy = "at"


@admin.register(Activity)
class ActivityAdmin(DealRowAdmin):
    list_display = ("held_at", "deal", "kind", "outcome", "by")
    list_filter = ("kind",)
    list_select_related = ("deal", "by")
    search_fields = (*DealRowAdmin.search_fields, "outcome", "notes")
    date_hierarchy = "held_at"


@admin.register(Offer)
class OfferAdmin(DealRowAdmin):
    list_display = (
        "deal",
        "version",
        "value",
        "value_base",
        "status",
        "prep_started_at",
        "sent_at",
    )
    list_filter = ("status",)
    date_hierarchy = "sent_at"


@admin.register(NegotiationRound)
class NegotiationRoundAdmin(DealRowAdmin):
    list_display = ("deal", "number", "held_at", "proposed_value", "discount_pct", "by")
    list_select_related = ("deal", "by")
    date_hierarchy = "held_at"


@admin.register(ClosingDocument)
class ClosingDocumentAdmin(DealRowAdmin):
    list_display = (
        "deal",
        "document_type",
        "number",
        "issue_date",
        "final_value",
        "signed_at",
        "paid_at",
    )
    list_filter = ("document_type",)
    search_fields = (*DealRowAdmin.search_fields, "number")
    date_hierarchy = "issue_date"


class DealRowInline(ViewOnlyMixin, admin.TabularInline):
    extra = 0
    #: The rows' foreign keys shown in the inline, fetched with the rows.
    row_select_related = ()

    def get_queryset(self, request):
        return super().get_queryset(request).select_related(*self.row_select_related)

    def get_readonly_fields(self, request, obj=None):
        # Every field is shown, none edited; naming them read-only lets the inline show
        # fields no form may hold (``entered_at`` is not editable).
        return self.fields


class ClosingDocumentInline(DealRowInline):
    model = ClosingDocument
    fields = (
        "document_type",
        "number",
        "issue_date",
        "final_value",
        "final_value_base",
        "signed_at",
        "paid_at",
    )


class OfferInline(DealRowInline):
    model = Offer
    fields = (
        "version",
        "status",
        "value",
        "value_base",
        "prep_started_at",
        "sent_at",
        "created_by",
        "sent_by",
        "responded_at",
        "responded_by",
    )
    row_select_related = ("created_by", "sent_by", "responded_by")


class NegotiationRoundInline(DealRowInline):
    model = NegotiationRound
    fields = ("number", "held_at", "proposed_value", "discount_pct", "notes", "by")
    row_select_related = ("by",)


class ActivityInline(DealRowInline):
    model = Activity
    fields = ("held_at", "kind", "outcome", "notes", "by")
    row_select_related = ("by",)


class StageHistoryInline(DealRowInline):
    model = StageHistory
    fields = ("at", "entered_at", "event", "from_stage", "to_stage", "lost_reason", "note", "by")
    row_select_related = ("by", "lost_reason")


class DealChangeInline(DealRowInline):
    model = DealChange
    fields = ("at", "entered_at", "field", "old_value", "new_value", "by")
    row_select_related = ("by",)


# Deals -----------------------------------------------------------------------------------


def _error_messages(exc):
    """A refusal from the domain as lines a person can read: "Field: message"."""
    if isinstance(exc, domain.StaleDealError):
        return [str(exc)]
    if not hasattr(exc, "error_dict"):
        return list(exc.messages)
    lines = []
    for name, errors in exc.message_dict.items():
        try:
            label = capfirst(Deal._meta.get_field(name).verbose_name)
        except FieldDoesNotExist:
            label = None
        for error in errors:
            lines.append(
                error if name == NON_FIELD_ERRORS or label is None else f"{label}: {error}"
            )
    return lines


class DealRefused(Exception):
    """The domain refused the form's change; nothing was written."""

    def __init__(self, lines):
        super().__init__(" ".join(lines))
        self.lines = lines


class DealFormMixin:
    """Checks that mirror the domain's, so the common mistakes come back as field
    errors with the input kept. ``funnel/domain.py`` stays the authority: whatever it
    still refuses is reported as a message (see ``DealAdmin.changeform_view``)."""

    def lead_moment(self, cleaned):
        return self.instance.entered_lead_at

    def clean(self):
        cleaned = super().clean()
        company, contact = cleaned.get("company"), cleaned.get("contact")
        if company and contact and contact.company_id != company.pk:
            self.add_error("contact", _("The contact works for another company."))
        lead_at = self.lead_moment(cleaned)
        first_touch = cleaned.get("first_touch_at")
        if lead_at and first_touch and first_touch > lead_at:
            self.add_error(
                "first_touch_at", _("The first marketing touch cannot follow the lead's creation.")
            )
        value, currency = cleaned.get("estimated_value"), cleaned.get("currency")
        money_changed = self.instance._state.adding or {"estimated_value", "currency"} & set(
            self.changed_data
        )
        if lead_at and value is not None and currency and money_changed:
            try:
                to_base(value, currency, lead_at)
            except ValidationError as exc:
                self.add_error("currency", exc)
        return cleaned


class DealAddForm(DealFormMixin, forms.ModelForm):
    class Meta:
        model = Deal
        fields = ()

    def lead_moment(self, cleaned):
        return cleaned.get("entered_lead_at")

    def clean_entered_lead_at(self):
        at = self.cleaned_data["entered_lead_at"]
        if at and at > timezone.now():
            raise ValidationError(_("A moment in the future cannot be recorded."), code="future")
        return at


class DealChangeForm(DealFormMixin, forms.ModelForm):
    # The deal's version when the form was loaded: ``update_deal`` refuses the save if
    # the deal changed since, instead of overwriting that change.
    expected_version = forms.IntegerField(
        label=_("version the form was loaded with"), widget=forms.HiddenInput
    )

    class Meta:
        model = Deal
        fields = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["expected_version"].initial = self.instance.version


class MarkLostForm(forms.Form):
    reason = forms.ModelChoiceField(
        label=_("Lost reason"), queryset=LostReason.objects.filter(is_active=True)
    )
    note = forms.CharField(
        label=_("Note"), required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60})
    )


class DisqualifyForm(forms.Form):
    note = forms.CharField(
        label=_("Note"), required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60})
    )


DEAL_FIELDS = (
    "title",
    "company",
    "contact",
    "channel",
    "owner",
    "external_id",
    "currency",
    "estimated_value",
    "first_touch_at",
)
QUALIFICATION_FIELDS = (
    "heard_from",
    "contact_prompt",
    "product_scope",
    "industry",
    "segment",
    "qualification_score",
)
NEEDS_FIELDS = ("problems", "desired_outcomes", "expected_close_date")

#: Fields of the change form that only the transitions write (``external_id`` is the
#: import key: set when the deal is created, never edited).
TRANSITION_FIELDS = (
    "external_id",
    "stage",
    "status",
    "estimated_value_base",
    "current_value_base",
    "agreed_value",
    "agreed_value_base",
    "agreed_at",
    "won_at",
    "lost_at",
    "lost_reason",
    "lost_stage",
    "last_event_at",
    *stages.STAMP_FIELDS,
    "version",
    "created_by",
    "updated_at",
)


@admin.register(Deal)
class DealAdmin(admin.ModelAdmin):
    form = DealChangeForm
    add_form = DealAddForm
    change_form_fieldsets = (
        (None, {"fields": (*DEAL_FIELDS, "expected_version")}),
        (_("Status"), {"fields": ("stage", "status", "current_value_base", "last_event_at")}),
        (_("Qualification"), {"fields": QUALIFICATION_FIELDS}),
        (_("Needs"), {"fields": NEEDS_FIELDS}),
        (
            _("Agreed terms"),
            {"fields": ("agreed_value", "agreed_value_base", "agreed_at", "discount_pct")},
        ),
        (_("Outcome"), {"fields": ("won_at", "lost_at", "lost_reason", "lost_stage", "lost_note")}),
        (_("Stage entries"), {"classes": ("collapse",), "fields": stages.STAMP_FIELDS}),
        (
            _("Record"),
            {
                "classes": ("collapse",),
                "fields": ("estimated_value_base", "version", "created_by", "updated_at"),
            },
        ),
    )
    add_form_fieldsets = (
        (None, {"fields": (*DEAL_FIELDS, "entered_lead_at")}),
        (_("Qualification"), {"fields": QUALIFICATION_FIELDS}),
        (_("Needs"), {"fields": NEEDS_FIELDS}),
    )
    list_display = (
        "title",
        "company",
        "owner",
        "owner__team",
        "stage",
        "status",
        "current_value_base",
        "channel",
        "entered_lead_at",
        "expected_close_date",
    )
    list_filter = (
        "stage",
        "status",
        ("owner", admin.RelatedOnlyFieldListFilter),
        ("owner__team", admin.RelatedOnlyFieldListFilter),
        ("channel", admin.RelatedOnlyFieldListFilter),
        "segment",
        "industry",
        ("lost_reason", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("company", "owner", "owner__team", "channel")
    search_fields = ("title", "company__name", "external_id", "contact__last_name")
    date_hierarchy = "entered_lead_at"
    autocomplete_fields = ("company", "contact", "channel", "owner")
    inlines = (
        ClosingDocumentInline,
        OfferInline,
        NegotiationRoundInline,
        ActivityInline,
        StageHistoryInline,
        DealChangeInline,
    )
    actions = ("mark_lost", "disqualify", "reopen")

    # Reading ---------------------------------------------------------------------------

    def get_queryset(self, request):
        return super().get_queryset(request).visible_to(request.user)

    def get_fieldsets(self, request, obj=None):
        return self.add_form_fieldsets if obj is None else self.change_form_fieldsets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        # The note explains a loss: it is edited while the deal is lost, not before.
        return (*TRANSITION_FIELDS, *(() if obj.status == Status.LOST else ("lost_note",)))

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else ()

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs.setdefault("form", self.add_form)
        return super().get_form(request, obj, **kwargs)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "owner":
            kwargs["queryset"] = User.objects.filter(user_q(request.user), is_active=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request):
        return {"owner": request.user.pk, **super().get_changeform_initial_data(request)}

    def has_delete_permission(self, request, obj=None):
        # No domain function deletes a deal: its history is append-only.
        return False

    # Writing through the domain --------------------------------------------------------

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DealRefused as refused:
            # Raised inside the view's transaction, so nothing of the save (not even its
            # admin log entry) was kept. The page reloads with what the database holds.
            for line in refused.lines:
                self.message_user(request, line, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            if change:
                # ``obj`` already carries the form's values; the domain compares against
                # the stored deal and writes the change log from it.
                deal = Deal.objects.get(pk=obj.pk)
                edits = {f: data[f] for f in form.changed_data if f in domain.EDITABLE_FIELDS}
                domain.update_deal(
                    deal, by=request.user, expected_version=data["expected_version"], **edits
                )
            else:
                details = {f: v for f, v in data.items() if f != "entered_lead_at"}
                deal = domain.create_deal(by=request.user, at=data["entered_lead_at"], **details)
        except (domain.StaleDealError, ValidationError) as exc:
            raise DealRefused(_error_messages(exc)) from exc
        obj.pk = deal.pk
        obj.refresh_from_db()
        obj._state.adding = False

    # Transitions -----------------------------------------------------------------------

    def has_reopen_permission(self, request):
        return request.user.can_reopen and self.has_change_permission(request)

    @admin.action(description=_("Mark selected deals lost…"), permissions=["change"])
    def mark_lost(self, request, queryset):
        form = MarkLostForm(request.POST if "post" in request.POST else None)
        if not form.is_valid():
            return self._confirmation(
                request,
                queryset,
                form,
                action="mark_lost",
                title=_("Mark deals lost"),
                intro=_(
                    "Each selected open deal is lost at its current stage, for the reason "
                    "chosen below. A deal already won or lost is left unchanged."
                ),
                submit=_("Mark lost"),
            )
        reason, note = form.cleaned_data["reason"], form.cleaned_data["note"]
        self._transition_each(
            request,
            queryset,
            lambda deal: domain.mark_lost(deal, reason, by=request.user, note=note),
            log=gettext("Marked lost: %(reason)s") % {"reason": reason},
            done=lambda n: ngettext(
                "%(count)d deal marked lost.", "%(count)d deals marked lost.", n
            ),
        )
        return None

    @admin.action(description=_("Disqualify selected leads…"), permissions=["change"])
    def disqualify(self, request, queryset):
        form = DisqualifyForm(request.POST if "post" in request.POST else None)
        if not form.is_valid():
            return self._confirmation(
                request,
                queryset,
                form,
                action="disqualify",
                title=_("Disqualify leads"),
                intro=_(
                    "Each selected lead is lost at qualification, for the reason "
                    "“%(reason)s”. A deal past qualification, won or lost is left unchanged."
                )
                % {"reason": LostReason.objects.get(code=LostReason.NOT_QUALIFIED)},
                submit=_("Disqualify"),
            )
        note = form.cleaned_data["note"]
        self._transition_each(
            request,
            queryset,
            lambda deal: domain.disqualify(deal, by=request.user, note=note),
            log=gettext("Disqualified."),
            done=lambda n: ngettext(
                "%(count)d lead disqualified.", "%(count)d leads disqualified.", n
            ),
        )
        return None

    @admin.action(description=_("Reopen selected lost deals"), permissions=["reopen"])
    def reopen(self, request, queryset):
        self._transition_each(
            request,
            queryset,
            lambda deal: domain.reopen(deal, by=request.user),
            log=gettext("Reopened."),
            done=lambda n: ngettext("%(count)d deal reopened.", "%(count)d deals reopened.", n),
        )
        return None

    def _transition_each(self, request, queryset, transition, *, log, done):
        """Run ``transition`` on each deal in its own transaction: one refusal (a closed
        deal, a stale copy) is reported and does not undo the others."""
        changed = 0
        for deal in queryset:
            try:
                transition(deal)
            except (domain.StaleDealError, ValidationError) as exc:
                for line in _error_messages(exc):
                    self.message_user(
                        request,
                        gettext("“%(deal)s”: %(error)s") % {"deal": deal, "error": line},
                        messages.ERROR,
                    )
            else:
                changed += 1
                self.log_change(request, deal, log)
        if changed:
            self.message_user(request, done(changed) % {"count": changed}, messages.SUCCESS)

    def _confirmation(self, request, queryset, form, *, action, title, intro, submit):
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "intro": intro,
            "submit_label": submit,
            "action_name": action,
            "form": form,
            "deals": queryset.select_related("company", "owner"),
            "opts": self.opts,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/funnel/deal/mark_lost.html", context)
