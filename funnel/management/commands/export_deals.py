"""``manage.py export_deals FILE``: write deals as CSV, in the format import_deals reads."""

from django.core.management.base import BaseCommand, CommandError

from funnel import importing
from funnel.management.commands.import_deals import user_named
from funnel.models import Deal


class Command(BaseCommand):
    help = (
        "Export deals to a CSV file in the import format (ISO 8601 timestamps with offset; "
        "text cells that a spreadsheet would run as formulas are prefixed with an "
        "apostrophe). '-' writes to standard output."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="the CSV file to write, or - for standard output")
        parser.add_argument("--owner", metavar="USERNAME", help="only this owner's deals")

    def handle(self, *args, file, owner=None, **options):
        deals = Deal.objects.all()
        if owner:
            deals = deals.filter(owner=user_named(owner, "--owner"))
        write_csv(self, file, importing.export_deals, deals, "deals")


def write_csv(command, file, export, rows, noun):
    """``export(out, rows)`` into ``file`` ('-': standard output), then say how many."""
    if file == "-":
        export(command.stdout, rows)
        return
    # With a byte-order mark: spreadsheets then read the file as UTF-8, not as the
    # locale's code page (Polish names intact); the imports accept it.
    try:
        with open(file, "w", encoding="utf-8-sig", newline="") as out:
            count = export(out, rows)
    except OSError as exc:
        raise CommandError(f"{file}: {exc.strerror or exc}") from exc
    command.stdout.write(f"{file}: {count} {noun} exported.")
