"""``manage.py import_spend FILE``: import monthly marketing spend per channel from CSV."""

from django.core.management.base import BaseCommand, CommandError

from funnel import importing
from funnel.management.commands.import_deals import add_common_arguments, report


class Command(BaseCommand):
    help = (
        "Import marketing spend (columns channel, month as YYYY-MM, amount, currency): one "
        "row per channel and month, created or updated. All or nothing unless --valid-only. "
        "The KPIs are recomputed before it returns."
    )

    def add_arguments(self, parser):
        add_common_arguments(parser)

    def handle(self, *args, file, create_missing, valid_only, dry_run, **options):
        try:
            result = importing.import_spend(
                file,
                create_missing=create_missing,
                valid_only=valid_only,
                dry_run=dry_run,
                recompute=True,
            )
        except OSError as exc:
            raise CommandError(f"{file}: {exc.strerror or exc}") from exc
        report(self, result, file)
