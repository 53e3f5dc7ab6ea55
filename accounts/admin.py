"""Users and teams in the Django admin: where admins give people a role and a team."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count
from django.utils.translation import gettext_lazy as _

from accounts.models import Team, User

ROLE_AND_TEAM = (_("Role and team"), {"fields": ("role", "team")})


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    # Django's own sections, with role and team right after the personal info.
    fieldsets = (
        *DjangoUserAdmin.fieldsets[:2],
        ROLE_AND_TEAM,
        *DjangoUserAdmin.fieldsets[2:],
    )
    add_fieldsets = (
        *DjangoUserAdmin.add_fieldsets,
        (_("Role and team"), {"classes": ("wide",), "fields": ("role", "team")}),
    )
    list_display = (
        "username",
        "first_name",
        "last_name",
        "email",
        "role",
        "team",
        "is_staff",
        "is_active",
    )
    list_filter = ("role", "team", "is_staff", "is_superuser", "is_active", "groups")
    list_select_related = ("team",)
    autocomplete_fields = ("team",)


class MemberInline(admin.TabularInline):
    """The team's members, shown for reference: a user joins a team on the user's page."""

    model = User
    fk_name = "team"
    fields = ("username", "first_name", "last_name", "role", "is_active")
    extra = 0
    show_change_link = True
    verbose_name = _("member")
    verbose_name_plural = _("members")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "manager", "member_count")
    list_select_related = ("manager",)
    search_fields = ("name",)
    autocomplete_fields = ("manager",)
    inlines = (MemberInline,)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("members"))

    @admin.display(description=_("members"), ordering="member_count")
    def member_count(self, team):
        return team.member_count
