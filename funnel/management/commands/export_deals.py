"""``manage.py export_deals FILE``: write deals as CSV, in the format import_deals reads."""

from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from funnel import importing
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
            user = User.objects.filter(username=owner).first()
            if user is None:
                raise CommandError(f"--owner: no user '{owner}'.")
            deals = deals.filter(owner=user)
        if file == "-":
            importing.export_deals(self.stdout, deals)
            return
        # With a byte-order mark: spreadsheets then read the file as UTF-8, not as the
        # locale's code page (Polish names intact); import_deals accepts it.
        try:
            with open(file, "w", encoding="utf-8-sig", newline="") as out:
                count = importing.export_deals(out, deals)
        except OSError as exc:
            raise CommandError(f"{file}: {exc.strerror or exc}") from exc
        self.stdout.write(f"{file}: {count} deals exported.")
