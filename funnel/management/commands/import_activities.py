"""``manage.py import_activities FILE``: import calls, e-mails, meetings and audits of
deals already imported (found by their external_id) from CSV."""

from django.core.management.base import BaseCommand, CommandError

from funnel import importing
from funnel.management.commands.import_deals import (
    actor_named,
    add_by_argument,
    add_common_arguments,
    report,
)


class Command(BaseCommand):
    help = (
        "Import activities (columns deal = the deal's external_id, kind = call, email, "
        "meeting or audit, held_at, outcome, notes, by = who logged it, else --by). All or "
        "nothing unless --valid-only; an activity already recorded (same deal, kind and "
        "moment) is left unchanged. The KPIs are recomputed before it returns."
    )

    def add_arguments(self, parser):
        add_common_arguments(parser, create_missing=False)
        add_by_argument(parser)

    def handle(self, *args, file, valid_only, dry_run, by=None, **options):
        actor = actor_named(by)
        try:
            result = importing.import_activities(
                file, by=actor, valid_only=valid_only, dry_run=dry_run, recompute=True
            )
        except OSError as exc:
            raise CommandError(f"{file}: {exc.strerror or exc}") from exc
        report(self, result, file)
