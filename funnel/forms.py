"""The rep workspace's forms. They only parse and validate what was typed; every change
is made by a function of ``funnel/domain.py``, whose refusals the views show on the form.

Forms that change a deal carry the deal's ``version`` as seen when the page was loaded,
so a submission from a stale page is refused instead of overwriting someone's change.
"""

import datetime
from decimal import Decimal

import django_filters
from django import forms
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from accounts.access import user_q
from accounts.models import User
from funnel import stages
from funnel.models import (
    ActivityKind,
    Channel,
    Deal,
    DocumentType,
    LostReason,
)
from funnel.money import base_currency, currency_validator
from funnel.stages import Stage, Status

MAX_MONEY = Decimal("99999999999999.99")


def money_field(label, *, required=True, **kwargs):
    # Localized, so a Polish user may type "12 500,50"; a text input with a decimal
    # keypad on phones, because a number input refuses the comma.
    return forms.DecimalField(
        label=label,
        required=required,
        min_value=Decimal(0),
        max_value=MAX_MONEY,
        decimal_places=2,
        localize=True,
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
        **kwargs,
    )


def percent_field(label, *, required=False):
    return forms.DecimalField(
        label=label,
        required=required,
        min_value=Decimal(0),
        max_value=Decimal(100),
        decimal_places=2,
        localize=True,
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )


def date_field(label, *, required=True, **kwargs):
    return forms.DateField(
        label=label,
        required=required,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        **kwargs,
    )


def not_in_future(value):
    if value is not None and value > timezone.localdate():
        raise forms.ValidationError(_("This date cannot be in the future."), code="future")


def moment_on(day, deal=None):
    """The moment recorded for an event the user dated ``day``: now for today, else
    noon that day, or the deal's latest event when that fell later on the same day (so
    a deal that moved on at 15:00 can still be won "that day")."""
    now = timezone.localtime()
    if day >= now.date():
        return now
    noon = timezone.make_aware(datetime.datetime.combine(day, datetime.time(12)))
    if deal is not None:
        latest = timezone.localtime(deal.last_event_at)
        if latest.date() == day and latest > noon:
            return latest
    return noon


def visible_owners(user):
    return User.objects.filter(user_q(user), is_active=True).order_by("first_name", "username")


class BootstrapMixin:
    """Bootstrap classes on every widget, and aria-invalid on fields with errors;
    templates/funnel/forms/form.html lays out label, input, help and messages."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            widget = field.widget
            if isinstance(widget, forms.HiddenInput):
                continue
            if isinstance(widget, forms.Select):
                css = "form-select"
            elif isinstance(widget, forms.CheckboxInput):
                css = "form-check-input"
            else:
                css = "form-control"
            widget.attrs["class"] = css

    def add_error(self, field, error):
        # Every error, from field cleaning, clean() or a domain refusal, comes through
        # here: mark the fields it lands on for Bootstrap and screen readers.
        super().add_error(field, error)
        for name in self.errors:
            if name in self.fields and not isinstance(self.fields[name].widget, forms.HiddenInput):
                attrs = self.fields[name].widget.attrs
                if "is-invalid" not in attrs.get("class", ""):
                    attrs["class"] = attrs.get("class", "") + " is-invalid"
                attrs["aria-invalid"] = "true"
                attrs["aria-describedby"] = f"{self.auto_id % name}_errors"


class DealForm(BootstrapMixin, forms.Form):
    """A form that changes ``deal``: carries the version the user saw.

    ``domain_fields`` maps a field named in a DomainError to this form's field."""

    version = forms.IntegerField(widget=forms.HiddenInput)
    domain_fields: dict[str, str] = {}

    def __init__(self, *args, deal, user, **kwargs):
        self.deal = deal
        self.user = user
        kwargs.setdefault("initial", {})
        kwargs["initial"].setdefault("version", deal.version)
        super().__init__(*args, **kwargs)


# New lead -----------------------------------------------------------------------------


class LeadForm(BootstrapMixin, forms.Form):
    title = forms.CharField(label=_("Title"), max_length=200)
    company_name = forms.CharField(
        label=_("Company"),
        max_length=200,
        help_text=_("An existing company with this name is reused."),
    )
    industry = forms.CharField(label=_("Industry"), max_length=100, required=False)
    segment = forms.CharField(label=_("Segment"), max_length=100, required=False)
    contact_first_name = forms.CharField(label=_("First name"), max_length=100, required=False)
    contact_last_name = forms.CharField(label=_("Last name"), max_length=100, required=False)
    contact_email = forms.EmailField(label=_("E-mail"), required=False)
    contact_phone = forms.CharField(label=_("Phone"), max_length=40, required=False)
    channel = forms.ModelChoiceField(
        label=_("Channel"),
        queryset=Channel.objects.filter(is_active=True),
        required=False,
        help_text=_("The marketing source the lead came from."),
    )
    estimated_value = money_field(_("Estimated value"), required=False)
    currency = forms.CharField(
        label=_("Currency"),
        max_length=3,
        widget=forms.TextInput(attrs={"autocapitalize": "characters", "size": 3}),
    )
    first_touch_on = date_field(
        _("First marketing touch"), required=False, validators=[not_in_future]
    )
    owner = forms.ModelChoiceField(label=_("Owner"), queryset=User.objects.none())

    def __init__(self, *args, user, **kwargs):
        self.user = user
        kwargs.setdefault("initial", {}).setdefault("currency", base_currency())
        super().__init__(*args, **kwargs)
        if user.is_manager or user.is_lejek_admin:
            self.fields["owner"].queryset = visible_owners(user)
            self.fields["owner"].initial = user.pk
        else:
            del self.fields["owner"]

    def clean_currency(self):
        currency = self.cleaned_data["currency"].upper()
        try:
            currency_validator(currency)
        except forms.ValidationError as exc:
            raise forms.ValidationError(
                _("Use a three-letter ISO 4217 code, e.g. PLN."), code="currency"
            ) from exc
        return currency

    def clean(self):
        cleaned = super().clean()
        contact = [cleaned.get(f) for f in ("contact_first_name", "contact_email", "contact_phone")]
        if any(contact) and not cleaned.get("contact_last_name"):
            self.add_error("contact_last_name", _("Enter the contact's last name."))
        return cleaned


# Deal page ----------------------------------------------------------------------------


class DetailsForm(DealForm):
    """The lead's data, editable while the deal is open; value, owner and expected
    close date edits land in the change log."""

    title = forms.CharField(label=_("Title"), max_length=200)
    channel = forms.ModelChoiceField(
        label=_("Channel"), queryset=Channel.objects.filter(is_active=True), required=False
    )
    estimated_value = money_field(_("Estimated value"), required=False)
    expected_close_date = date_field(_("Expected close date"), required=False)
    owner = forms.ModelChoiceField(label=_("Owner"), queryset=User.objects.none())

    def __init__(self, *args, deal, user, **kwargs):
        initial = kwargs.setdefault("initial", {})
        for name in ("title", "estimated_value", "expected_close_date"):
            initial.setdefault(name, getattr(deal, name))
        initial.setdefault("channel", deal.channel_id)
        initial.setdefault("owner", deal.owner_id)
        super().__init__(*args, deal=deal, user=user, **kwargs)
        if user.is_manager or user.is_lejek_admin:
            self.fields["owner"].queryset = visible_owners(user)
        else:
            del self.fields["owner"]
        if deal.channel_id and not deal.channel.is_active:
            # An inactive channel stays selectable on the deals that already use it.
            self.fields["channel"].queryset = Channel.objects.filter(
                Q(is_active=True) | Q(pk=deal.channel_id)
            )


class QualificationForm(DealForm):
    heard_from = forms.CharField(label=_("How they heard of us"), max_length=200, required=False)
    contact_prompt = forms.CharField(
        label=_("What prompted the contact"), max_length=200, required=False
    )
    product_scope = forms.CharField(
        label=_("Product or service scope"), max_length=200, required=False
    )
    industry = forms.CharField(label=_("Industry"), max_length=100, required=False)
    segment = forms.CharField(label=_("Segment"), max_length=100, required=False)
    qualification_score = forms.IntegerField(
        label=_("Qualification score"),
        min_value=0,
        max_value=100,
        required=False,
        help_text=_("0 to 100."),
    )

    FIELDS = (
        "heard_from",
        "contact_prompt",
        "product_scope",
        "industry",
        "segment",
        "qualification_score",
    )

    def __init__(self, *args, deal, user, **kwargs):
        initial = kwargs.setdefault("initial", {})
        for name in self.FIELDS:
            initial.setdefault(name, getattr(deal, name))
        super().__init__(*args, deal=deal, user=user, **kwargs)


class NeedsForm(DealForm):
    problems = forms.CharField(
        label=_("Problems and challenges"), widget=forms.Textarea(attrs={"rows": 3}), required=False
    )
    desired_outcomes = forms.CharField(
        label=_("Desired outcomes"), widget=forms.Textarea(attrs={"rows": 3}), required=False
    )
    expected_close_date = date_field(_("Expected close date"), required=False)

    FIELDS = ("problems", "desired_outcomes", "expected_close_date")

    def __init__(self, *args, deal, user, **kwargs):
        initial = kwargs.setdefault("initial", {})
        for name in self.FIELDS:
            initial.setdefault(name, getattr(deal, name))
        super().__init__(*args, deal=deal, user=user, **kwargs)


class ActivityForm(DealForm):
    kind = forms.ChoiceField(label=_("Kind"), choices=ActivityKind.choices)
    held_at = forms.DateTimeField(
        label=_("Held at"),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    outcome = forms.CharField(label=_("Outcome"), max_length=200, required=False)
    notes = forms.CharField(
        label=_("Notes"), widget=forms.Textarea(attrs={"rows": 2}), required=False
    )

    def __init__(self, *args, deal, user, **kwargs):
        kwargs.setdefault("initial", {}).setdefault(
            "held_at", timezone.localtime().replace(second=0, microsecond=0)
        )
        super().__init__(*args, deal=deal, user=user, **kwargs)

    def clean_held_at(self):
        held_at = self.cleaned_data["held_at"]
        created = self.deal.entered_lead_at
        # The input has minute precision: a call logged in the minute the lead was
        # recorded means "right then", not "before the lead existed".
        if held_at < created and held_at >= created.replace(second=0, microsecond=0):
            return created
        return held_at


class MoveForm(DealForm):
    to_stage = forms.ChoiceField(label=_("Move to"), choices=())

    def __init__(self, *args, deal, user, **kwargs):
        super().__init__(*args, deal=deal, user=user, **kwargs)
        ahead = stages.ORDER[stages.index(deal.stage) + 1 :]
        self.fields["to_stage"].choices = [(s.value, s.label) for s in ahead]
        if ahead:
            self.fields["to_stage"].initial = ahead[0].value

    domain_fields = {"stage": "to_stage"}


class OfferForm(DealForm):
    value = money_field(_("Offer value"))
    notes = forms.CharField(
        label=_("Notes"), widget=forms.Textarea(attrs={"rows": 2}), required=False
    )


class TermsForm(DealForm):
    agreed_value = money_field(_("Agreed value"))
    discount_pct = percent_field(_("Discount %"))

    def __init__(self, *args, deal, user, **kwargs):
        initial = kwargs.setdefault("initial", {})
        initial.setdefault("agreed_value", deal.agreed_value)
        initial.setdefault("discount_pct", deal.discount_pct)
        super().__init__(*args, deal=deal, user=user, **kwargs)


class RoundForm(DealForm):
    held_on = date_field(_("Date"), validators=[not_in_future])
    proposed_value = money_field(_("Proposed value"))
    discount_pct = percent_field(_("Discount %"))
    notes = forms.CharField(
        label=_("Notes"), widget=forms.Textarea(attrs={"rows": 2}), required=False
    )
    domain_fields = {"held_at": "held_on"}

    def __init__(self, *args, deal, user, **kwargs):
        kwargs.setdefault("initial", {}).setdefault("held_on", timezone.localdate())
        super().__init__(*args, deal=deal, user=user, **kwargs)


class ClosingForm(DealForm):
    document_type = forms.ChoiceField(label=_("Document type"), choices=DocumentType.choices)
    number = forms.CharField(label=_("Number"), max_length=60, required=False)
    issue_date = date_field(_("Issue date"), validators=[not_in_future])
    final_value = money_field(_("Final value"))
    signed_on = date_field(
        pgettext_lazy("closing", "Signed or paid on"),
        required=False,
        validators=[not_in_future],
        help_text=_("Enter it when the contract is signed or the pro-forma paid: the deal is won."),
    )
    domain_fields = {"at": "signed_on"}

    def __init__(self, *args, deal, user, document=None, **kwargs):
        initial = kwargs.setdefault("initial", {})
        if document is not None:
            initial.setdefault("document_type", document.document_type)
            initial.setdefault("number", document.number)
            initial.setdefault("issue_date", document.issue_date)
            initial.setdefault("final_value", document.final_value)
        else:
            initial.setdefault("issue_date", timezone.localdate())
            initial.setdefault("final_value", deal.agreed_value)
        super().__init__(*args, deal=deal, user=user, **kwargs)

    def clean(self):
        cleaned = super().clean()
        issued, signed = cleaned.get("issue_date"), cleaned.get("signed_on")
        if issued and signed and signed < issued:
            self.add_error("signed_on", _("The deal cannot be won before its document was issued."))
        return cleaned


class LostForm(DealForm):
    lost_reason = forms.ModelChoiceField(
        label=_("Reason"),
        queryset=LostReason.objects.filter(is_active=True),
        empty_label=_("Choose a reason"),
        error_messages={"required": _("Choose why the deal was lost.")},
    )
    note = forms.CharField(
        label=_("Note"), widget=forms.Textarea(attrs={"rows": 3}), required=False
    )
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["lost_reason"].label_from_instance = lambda reason: reason.label


class VersionForm(DealForm):
    """An action with nothing to type (reopen, disqualify, send or answer an offer)."""


# Lists --------------------------------------------------------------------------------


class DealFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(label=_("Search"), method="search")
    stage = django_filters.ChoiceFilter(label=_("Stage"), choices=Stage.choices)
    status = django_filters.ChoiceFilter(label=_("Status"), choices=Status.choices)
    channel = django_filters.ModelChoiceFilter(label=_("Channel"), queryset=Channel.objects.all())
    segment = django_filters.ChoiceFilter(label=_("Segment"), choices=())
    owner = django_filters.ModelChoiceFilter(label=_("Owner"), queryset=User.objects.none())
    created_from = django_filters.DateFilter(
        label=_("Created from"),
        field_name="entered_lead_at",
        method="created_on_or_after",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    created_to = django_filters.DateFilter(
        label=_("Created to"),
        field_name="entered_lead_at",
        method="created_on_or_before",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    sort = django_filters.OrderingFilter(
        label=_("Sort by"),
        fields=(
            ("entered_lead_at", "created"),
            ("company__name", "company"),
            ("title", "title"),
            ("current_value_base", "value"),
            ("stage", "stage"),
            ("last_event_at", "activity"),
        ),
        field_labels={
            "entered_lead_at": _("Created"),
            "company__name": _("Company"),
            "title": _("Title"),
            "current_value_base": _("Value"),
            "stage": _("Stage"),
            "last_event_at": _("Last event"),
        },
    )

    class Meta:
        model = Deal
        fields = []

    def __init__(self, data=None, *args, user, segments=(), **kwargs):
        super().__init__(data, *args, **kwargs)
        self.filters["segment"].extra["choices"] = [(s, s) for s in segments]
        if user.is_manager or user.is_lejek_admin:
            self.filters["owner"].queryset = visible_owners(user)
        else:
            del self.filters["owner"]
        for field in self.form.fields.values():
            css = "form-select" if isinstance(field.widget, forms.Select) else "form-control"
            field.widget.attrs["class"] = css + " form-control-sm" * (css == "form-control")
            if css == "form-select":
                field.widget.attrs["class"] += " form-select-sm"

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(
            Q(title__icontains=value)
            | Q(company__name__icontains=value)
            | Q(contact__last_name__icontains=value)
            | Q(external_id__iexact=value)
        )

    def created_on_or_after(self, queryset, name, value):
        start = timezone.make_aware(datetime.datetime.combine(value, datetime.time()))
        return queryset.filter(entered_lead_at__gte=start)

    def created_on_or_before(self, queryset, name, value):
        end = timezone.make_aware(
            datetime.datetime.combine(value + datetime.timedelta(days=1), datetime.time())
        )
        return queryset.filter(entered_lead_at__lt=end)
