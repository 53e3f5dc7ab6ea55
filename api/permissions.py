"""Role checks of the API. Which rows a user sees is decided by accounts/access.py
(``visible_to``); these only say which roles may use an endpoint or write to it."""

from rest_framework.permissions import SAFE_METHODS, BasePermission


def is_manager_or_admin(user):
    return bool(user and user.is_authenticated and (user.is_manager or user.is_lejek_admin))


class IsManagerOrAdmin(BasePermission):
    """Managers and admins only (imports, exports, marketing spend)."""

    def has_permission(self, request, view):
        return is_manager_or_admin(request.user)


class ReadOnlyOrAdmin(BasePermission):
    """Everyone signed in reads; only an admin changes (managed lists: channels, lost
    reasons)."""

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return True
        return bool(request.user and request.user.is_lejek_admin)


class ReadOnlyOrManager(BasePermission):
    """Everyone signed in reads what they may see; managers and admins write (targets)."""

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return True
        return is_manager_or_admin(request.user)
