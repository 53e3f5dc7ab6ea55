from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models
from django.utils.translation import gettext_lazy as _


class Role(models.TextChoices):
    REP = "rep", _("Sales rep")
    MANAGER = "manager", _("Manager")
    ADMIN = "admin", _("Admin")


class Team(models.Model):
    """A sales team: one manager leads it, reps belong to it through User.team."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    manager = models.ForeignKey(
        "accounts.User",
        verbose_name=_("manager"),
        on_delete=models.PROTECT,
        related_name="managed_teams",
        null=True,
        blank=True,
        limit_choices_to={"role__in": [Role.MANAGER, Role.ADMIN]},
    )

    class Meta:
        ordering = ["name"]
        verbose_name = _("team")
        verbose_name_plural = _("teams")

    def __str__(self):
        return self.name


class User(AbstractUser):
    role = models.CharField(_("role"), max_length=10, choices=Role.choices, default=Role.REP)
    team = models.ForeignKey(
        Team,
        verbose_name=_("team"),
        on_delete=models.SET_NULL,
        related_name="members",
        null=True,
        blank=True,
    )

    objects = UserManager()

    class Meta:
        ordering = ["username"]
        verbose_name = _("user")
        verbose_name_plural = _("users")

    def __str__(self):
        return self.get_full_name() or self.username

    @property
    def is_rep(self):
        return self.role == Role.REP

    @property
    def is_manager(self):
        return self.role == Role.MANAGER

    @property
    def is_lejek_admin(self):
        """Admins see everything; a Django superuser counts as one whatever its role."""
        return self.role == Role.ADMIN or self.is_superuser

    @property
    def can_reopen(self):
        return self.is_manager or self.is_lejek_admin
