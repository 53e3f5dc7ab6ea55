"""The one place that decides who may see what.

A rep sees and edits only the deals they own. A manager sees and edits the deals of the
teams they lead (and any deal they own themselves). An admin sees everything. Every
view, API endpoint, export and report gets its rows through these functions, usually
via ``Deal.objects.visible_to(user)`` and the ``visible_to`` of the related models.
"""

from django.db.models import Q
from django.http import Http404

from accounts.models import User


def deal_owner_q(user, prefix=""):
    """A Q object over deals (or over rows reaching a deal through ``prefix``)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return Q(pk__in=[])
    if user.is_lejek_admin:
        return Q()
    owner = f"{prefix}owner"
    if user.is_manager:
        return Q(**{owner: user}) | Q(**{f"{owner}__team__manager": user})
    return Q(**{owner: user})


def visible_owner_ids(user):
    """The ids of the users whose deals ``user`` sees (``user_q``: the same rule as
    ``deal_owner_q``), listed in one small query; None when they see every deal.
    ``owner_id IN (1, 2, 3)`` is a condition PostgreSQL estimates well: a join through
    the few rows of the user table is guessed at one row, and a drill-down then hashes a
    whole team's deals instead of reading a page off an index."""
    if user is not None and user.is_authenticated and user.is_active and user.is_lejek_admin:
        return None
    return list(User.objects.filter(user_q(user)).values_list("pk", flat=True))


def user_q(user):
    """Which users' data (as deal owners, KPI slices) ``user`` may see."""
    if user is None or not user.is_authenticated or not user.is_active:
        return Q(pk__in=[])
    if user.is_lejek_admin:
        return Q()
    if user.is_manager:
        return Q(pk=user.pk) | Q(team__manager=user)
    return Q(pk=user.pk)


def get_visible_or_404(queryset, user, **lookup):
    """Fetch one row of ``queryset.visible_to(user)`` or raise 404: never 403, so an
    outsider cannot even learn that the row exists."""
    try:
        return queryset.visible_to(user).get(**lookup)
    except queryset.model.DoesNotExist as exc:
        raise Http404 from exc
