"""Which KPI slices a user may read, and the report filters that choose one.

Visibility follows accounts/access.py: a rep reads only their own rep slice; a manager
the slices of the teams they lead and of the users ``user_q`` lets them see (their reps
and themselves); an admin every slice. Channel, segment and industry slices count the
deals of every team, so only admins read them. Asking for any other slice is a 404, as
for another rep's deal: the answer never tells that the slice exists.

Stored snapshots are per single slice, so filters do not intersect freely:

- team and rep together read the rep's slice (the rep must belong to the team);
- channel, segment and industry each read their own company-wide slice and combine
  with no other filter.
"""

from django import forms
from django.http import Http404
from django.utils.translation import gettext_lazy as _

from accounts.access import user_q
from accounts.models import Role, Team, User
from funnel.models import Channel
from kpis.periods import Grain, Period, today

#: The longest trend a report draws, in periods.
MAX_TREND = 36
DEFAULT_TREND = 12

COMBINATION_HELP = _(
    "Team and rep narrow each other: with both, the rep's numbers are shown. Channel, "
    "segment and industry each show the whole company's deals of that kind and cannot be "
    "combined with another filter, because KPIs are stored per single slice."
)


class Scope:
    """What ``user`` may read: the teams, people and (admins) channels to choose from.
    Three small queries at most, whatever the amount of data."""

    def __init__(self, user):
        self.user = user
        self.is_admin = user.is_lejek_admin
        if self.is_admin:
            self.teams = list(Team.objects.order_by("name"))
        elif user.is_manager:
            self.teams = list(user.managed_teams.order_by("name"))
        else:
            self.teams = []
        if self.is_admin or user.is_manager:
            self.people = list(
                User.objects.filter(user_q(user), role__in=[Role.REP, Role.MANAGER], is_active=True)
                .select_related("team")
                .order_by("first_name", "last_name", "username")
            )
        else:
            self.people = [user]
        self.channels = list(Channel.objects.order_by("name")) if self.is_admin else []
        self.team_ids = {t.pk for t in self.teams}
        self.person_ids = {u.pk for u in self.people}
        self.channel_ids = {c.pk for c in self.channels}

    @property
    def default_slice(self):
        if self.is_admin:
            return "company"
        if self.teams:
            return f"team:{self.teams[0].pk}"
        return f"rep:{self.user.pk}"

    def allows(self, slice_key):
        kind, _sep, value = slice_key.partition(":")
        if kind == "company":
            return self.is_admin and not value
        if kind in ("segment", "industry"):
            return self.is_admin and bool(value)
        if not value.isdigit():
            return False
        ids = {"team": self.team_ids, "rep": self.person_ids, "channel": self.channel_ids}
        return int(value) in ids.get(kind, ())

    def check(self, slice_key):
        """The slice key, or 404 when the user may not read it."""
        if not self.allows(slice_key or ""):
            raise Http404
        return slice_key

    def label(self, slice_key):
        kind, _sep, value = slice_key.partition(":")
        if kind == "company":
            return str(_("Whole company"))
        if kind == "team":
            return next((t.name for t in self.teams if str(t.pk) == value), value)
        if kind == "rep":
            return next((str(u) for u in self.people if str(u.pk) == value), value)
        if kind == "channel":
            return next((c.name for c in self.channels if str(c.pk) == value), value)
        return f"{_('Segment') if kind == 'segment' else _('Industry')}: {value}"


class ReportFilterForm(forms.Form):
    """Grain, period range and the one slice a report reads. Values a user may not see
    are refused with 404 by ``resolve`` before the form is even validated."""

    grain = forms.ChoiceField(label=_("Grain"), choices=Grain.choices, required=False)
    period = forms.CharField(
        label=_("Period"),
        required=False,
        max_length=20,
        help_text=_("e.g. 2025-03, 2025-W11, 2025-Q1, 2025 or a date; empty: the current one"),
    )
    since = forms.CharField(
        label=_("Trend from"),
        required=False,
        max_length=20,
        help_text=_("First period of the trend; empty: the 12 periods up to the one shown"),
    )
    team = forms.TypedChoiceField(label=_("Team"), coerce=int, required=False, empty_value=None)
    rep = forms.TypedChoiceField(label=_("Rep"), coerce=int, required=False, empty_value=None)
    channel = forms.TypedChoiceField(
        label=_("Channel"), coerce=int, required=False, empty_value=None
    )
    segment = forms.CharField(label=_("Segment"), required=False, max_length=100)
    industry = forms.CharField(label=_("Industry"), required=False, max_length=100)

    def __init__(self, data, scope, **kwargs):
        super().__init__(data, **kwargs)
        self.scope = scope
        every = [("", _("All visible"))]
        self.fields["team"].choices = every + [(t.pk, t.name) for t in scope.teams]
        self.fields["rep"].choices = every + [(u.pk, str(u)) for u in scope.people]
        self.fields["channel"].choices = every + [(c.pk, c.name) for c in scope.channels]
        if not scope.teams:
            del self.fields["team"]
        if not scope.is_admin:
            for name in ("channel", "segment", "industry"):
                del self.fields[name]
        for field in self.fields.values():
            select = isinstance(field.widget, forms.Select)
            field.widget.attrs["class"] = (
                "form-select form-select-sm" if select else "form-control form-control-sm"
            )

    def clean_grain(self):
        return self.cleaned_data.get("grain") or Grain.MONTH.value

    def _period(self, name, grain):
        text = (self.cleaned_data.get(name) or "").strip()
        if not text:
            return None
        try:
            return Period.parse(grain, text)
        except ValueError:
            self.add_error(name, _("“%(text)s” is not a period of this grain.") % {"text": text})
            return None

    def clean(self):
        data = super().clean()
        grain = data.get("grain") or Grain.MONTH.value
        period = self._period("period", grain) or Period.containing(grain, today())
        since = self._period("since", grain)
        if since is None:
            since = period
            for _i in range(DEFAULT_TREND - 1):
                since = since.previous()
        if since > period:
            self.add_error("since", _("The trend must start at or before the period shown."))
            since = period
        trend = [since]
        while trend[-1] < period:
            trend.append(trend[-1].following())
        if len(trend) > MAX_TREND:
            self.add_error("since", _("A trend covers at most %(n)d periods.") % {"n": MAX_TREND})
            trend = trend[-MAX_TREND:]
        data["period_obj"], data["trend"] = period, trend
        people = [data.get(n) for n in ("channel", "segment", "industry") if data.get(n)]
        if len(people) > 1 or (people and (data.get("team") or data.get("rep"))):
            raise forms.ValidationError(COMBINATION_HELP, code="combination")
        if data.get("team") and data.get("rep"):
            rep = next(u for u in self.scope.people if u.pk == data["rep"])
            if rep.team_id != data["team"]:
                self.add_error("rep", _("This person is not in the chosen team."))
        return data

    def slice_key(self):
        data = self.cleaned_data
        if data.get("rep"):
            return f"rep:{data['rep']}"
        if data.get("team"):
            return f"team:{data['team']}"
        if data.get("channel"):
            return f"channel:{data['channel']}"
        for kind in ("segment", "industry"):
            if data.get(kind):
                return f"{kind}:{data[kind].strip()}"
        return self.scope.default_slice


def resolve(request):
    """(scope, bound form, slice key, period, trend periods) for a report request. A
    filter naming a team, person or channel the user may not see is a 404; a malformed
    one too (no form error that would tell what exists)."""
    scope = Scope(request.user)
    params = request.GET
    for name, allowed in (
        ("team", scope.team_ids),
        ("rep", scope.person_ids),
        ("channel", scope.channel_ids),
    ):
        value = params.get(name, "").strip()
        if value and (not value.isdigit() or int(value) not in allowed):
            raise Http404
    for name in ("segment", "industry"):
        if params.get(name, "").strip() and not scope.is_admin:
            raise Http404
    data = params.copy()
    if not data.get("grain"):
        # A bound form shows what was sent: without this, the grain select would show
        # its first choice (day) while the report reads months.
        data["grain"] = Grain.MONTH.value
    form = ReportFilterForm(data, scope)
    if form.is_valid():
        data = form.cleaned_data
        slice_key = form.slice_key()
    else:
        data = form.cleaned_data
        slice_key = scope.default_slice
    grain = data.get("grain") or Grain.MONTH.value
    period = data.get("period_obj") or Period.containing(grain, today())
    trend = data.get("trend") or [period]
    if period.grain != grain:
        period = Period.containing(grain, period.start)
    return scope, form, scope.check(slice_key), period, trend
