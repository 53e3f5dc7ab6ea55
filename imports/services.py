"""The upload page's and the API's door onto funnel/importing.py: one implementation
behind the commands, the page and the endpoint; this only adds who may do what.

An admin imports for anyone and may create missing owners; a manager imports deals
owned by the people they lead (themselves and their teams' members): another owner is
reported as a row error, never created. Activities go on the deals the manager can see,
logged by the people they lead. KPIs are recomputed by the worker: every
transition of the import marks its days dirty and enqueues the recompute on commit.
"""

from django.utils.translation import gettext_lazy as _

from accounts.access import user_q
from accounts.models import User
from funnel import importing
from funnel.models import Deal

KINDS = {"deals": _("Deals"), "spend": _("Marketing spend"), "activities": _("Activities")}

#: Columns the preview table shows for each kind.
PREVIEW_COLUMNS = {
    "deals": ("external_id", "title", "company", "owner", "stage", "status", "lead_at"),
    "spend": ("channel", "month", "amount", "currency"),
    "activities": ("deal", "kind", "held_at", "outcome", "by"),
}


def may_import(user):
    return bool(user.is_authenticated and (user.is_manager or user.is_lejek_admin))


def run_import(kind, source, *, user, create_missing=False, valid_only=False, dry_run=False):
    """Run the ``kind`` ("deals", "spend" or "activities") import of ``source`` as
    ``user``."""
    owners = None if user.is_lejek_admin else User.objects.filter(user_q(user))
    if kind == "activities":
        # A manager logs activities on the deals they can see, by the people they lead.
        deals = None if user.is_lejek_admin else Deal.objects.visible_to(user)
        return importing.import_activities(
            source, by=user, valid_only=valid_only, dry_run=dry_run, deals=deals, owners=owners
        )
    if kind == "deals":
        return importing.import_deals(
            source,
            by=user,
            create_missing=create_missing,
            valid_only=valid_only,
            dry_run=dry_run,
            owners=owners,
        )
    if kind == "spend":
        return importing.import_spend(
            source, create_missing=create_missing, valid_only=valid_only, dry_run=dry_run
        )
    raise ValueError(f"Unknown import kind {kind!r}")


def preview_cells(kind, cells):
    if cells is None:
        return None
    return {column: cells.get(column, "") for column in PREVIEW_COLUMNS[kind]}


def result_dict(result, *, name="file"):
    """The report of ``result`` as JSON-ready data (the API's body, the page's table)."""
    return {
        "kind": result.kind,
        "dry_run": result.dry_run,
        "valid_only": result.valid_only,
        "rejected": result.rejected,
        "written": result.written,
        "valid": result.valid,
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "failed": result.failed,
        "errors": [{"line": line, "message": message} for line, message in result.errors],
        "created_owners": result.created_owners,
        "created_companies": result.created_companies,
        "created_channels": result.created_channels,
        "created_reasons": result.created_reasons,
        "first_day": result.first_day,
        "last_day": result.last_day,
        "rows": [
            {"line": line, "outcome": outcome, "cells": preview_cells(result.kind, cells)}
            for line, outcome, cells in result.rows
        ],
        "report": importing.report_lines(result, name=name),
    }
