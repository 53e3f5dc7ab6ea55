"""``manage.py import_deals FILE``: import historical deals from CSV (funnel/importing.py)."""

from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from funnel import importing


def report(command, result, path):
    """Print ``result``; fail (non-zero exit) when the file was rejected."""
    lines = importing.report_lines(result, name=path)
    if result.rejected:
        for line in lines[:-1]:
            command.stderr.write(line)
        hint = " Use --valid-only to import the valid rows." if result.failed else ""
        raise CommandError(lines[-1] + hint)
    for line in lines:
        if line.startswith("line "):
            command.stderr.write(line)
        else:
            command.stdout.write(line)


def add_common_arguments(parser, *, create_missing=True):
    parser.add_argument("file", help="a UTF-8 CSV file with a header row")
    if create_missing:
        parser.add_argument(
            "--create-missing",
            action="store_true",
            help="create unknown channels (and, for deals, owners and lost reasons) "
            "instead of reporting their rows as errors",
        )
    parser.add_argument(
        "--valid-only",
        action="store_true",
        help="import the valid rows and report the others (default: all or nothing)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and apply everything, then roll it back: report what would change",
    )


def add_by_argument(parser):
    parser.add_argument(
        "--by", metavar="USERNAME", help="the user recorded as the actor of every change"
    )


def actor_named(username):
    """The user ``--by`` names, or None when it names nobody."""
    return user_named(username, "--by") if username else None


def user_named(username, option):
    """The user with ``username``; a CommandError about ``option`` when there is none."""
    user = User.objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"{option}: no user '{username}'.")
    return user


class Command(BaseCommand):
    help = (
        "Import historical deals from a CSV file, one row per deal, replayed through the "
        "funnel's transitions. All or nothing unless --valid-only; rows whose external_id "
        "already exists are left unchanged. The KPIs are recomputed before it returns."
    )

    def add_arguments(self, parser):
        add_common_arguments(parser)
        add_by_argument(parser)

    def handle(self, *args, file, create_missing, valid_only, dry_run, by=None, **options):
        actor = actor_named(by)
        try:
            result = importing.import_deals(
                file,
                by=actor,
                create_missing=create_missing,
                valid_only=valid_only,
                dry_run=dry_run,
                recompute=True,
            )
        except OSError as exc:
            raise CommandError(f"{file}: {exc.strerror or exc}") from exc
        report(self, result, file)
