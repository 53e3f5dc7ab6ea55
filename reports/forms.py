"""The target form: a manager sets the revenue target of a team or rep they lead for a
period; an admin also the company's. Setting it again for the same scope and period
replaces it (one target per scope and period, kpis.models.Target)."""

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from kpis.models import Target
from kpis.periods import Grain, Period


class TargetForm(forms.Form):
    grain = forms.ChoiceField(label=_("Grain"), choices=Grain.choices, initial=Grain.MONTH)
    period = forms.CharField(
        label=_("Period"),
        max_length=20,
        help_text=_("e.g. 2025-03, 2025-Q1 or 2025"),
    )
    scope = forms.ChoiceField(label=_("For"))
    amount = forms.DecimalField(
        label=_("Target revenue"), min_value=0, max_digits=16, decimal_places=2
    )

    def __init__(self, *args, scope, **kwargs):
        super().__init__(*args, **kwargs)
        self.user_scope = scope
        choices = []
        if scope.is_admin:
            choices.append(("company", _("Whole company")))
        choices += [(f"team:{t.pk}", _("Team: %(name)s") % {"name": t.name}) for t in scope.teams]
        choices += [(f"rep:{u.pk}", str(u)) for u in scope.people]
        self.fields["scope"].choices = choices
        for field in self.fields.values():
            select = isinstance(field.widget, forms.Select)
            field.widget.attrs["class"] = (
                "form-select form-select-sm" if select else "form-control form-control-sm"
            )

    def clean(self):
        data = super().clean()
        grain, text = data.get("grain"), data.get("period")
        if grain and text:
            try:
                self.period = Period.parse(grain, text)
            except ValueError:
                self.add_error(
                    "period", _("“%(text)s” is not a period of this grain.") % {"text": text}
                )
        return data

    def save(self, by):
        kind, _sep, value = self.cleaned_data["scope"].partition(":")
        team_id = int(value) if kind == "team" else None
        rep_id = int(value) if kind == "rep" else None
        target, created = Target.objects.update_or_create(
            grain=self.period.grain,
            period_start=self.period.start,
            team_id=team_id,
            rep_id=rep_id,
            defaults={
                "amount": self.cleaned_data["amount"],
                "set_by": by,
                "set_at": timezone.now(),
            },
        )
        return target, created
