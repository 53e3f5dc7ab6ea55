"""``manage.py export_activities FILE``: write activities as CSV, in the format
import_activities reads."""

from django.core.management.base import BaseCommand

from funnel import importing
from funnel.management.commands.export_deals import write_csv
from funnel.management.commands.import_deals import user_named
from funnel.models import Activity


class Command(BaseCommand):
    help = (
        "Export the activities of deals that have an external_id to a CSV file in the "
        "import_activities format. '-' writes to standard output."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="the CSV file to write, or - for standard output")
        parser.add_argument("--owner", metavar="USERNAME", help="only this owner's deals")

    def handle(self, *args, file, owner=None, **options):
        activities = Activity.objects.all()
        if owner:
            activities = activities.filter(deal__owner=user_named(owner, "--owner"))
        write_csv(self, file, importing.export_activities, activities, "activities")
