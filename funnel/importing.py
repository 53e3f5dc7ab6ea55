"""Historical import and export of deals and marketing spend as CSV.

One implementation for every door: the ``import_deals``, ``import_spend`` and
``export_deals`` management commands call it, and so will the upload page and the API.

Import replays each deals row through ``funnel/domain.py`` with the row's own moments
(create, move forward, offer, rounds, terms, closing document, win or loss), so an
imported deal is exactly what the transition functions produce: the same stamps, the
same history rows (skips included), the same base-currency amounts, the same dirty
marks. Every refusal becomes an error of that row, named by its CSV line (the header is
line 1) and column. By default a file is all or nothing: if any row fails, nothing is
written. ``valid_only`` keeps the good rows (a row replayed through the domain runs in
its own savepoint); ``dry_run`` applies everything inside a transaction that is then
rolled back.

For speed, a row creating a deal is first replayed in memory by funnel/import_bulk.py,
with the same checks, and written in bulk with the others (COPY on PostgreSQL); only a
row that replay cannot vouch for (one the domain refuses, or one whose owner, channel or
lost reason must be created) goes through the domain functions. Both paths write the
same rows (tests/funnel/test_import_bulk.py).

Export writes the same columns, timestamps in ISO 8601 with their offset, and
neutralises spreadsheet formulas in text cells (pitfalls.md, "Exports"); import strips
that neutralising apostrophe again.
"""

import csv
import datetime
import io
import os
import re
from collections import defaultdict
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models import Count
from django.db.models.functions import Upper
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import Role, User
from funnel import domain, stages
from funnel.import_bulk import DETAIL_FIELDS, BulkDeals, agreed_terms, answered_at
from funnel.models import (
    Activity,
    ActivityKind,
    Channel,
    Company,
    Deal,
    DocumentType,
    LostReason,
    MarketingSpend,
    OfferStatus,
)
from funnel.money import base_currency, local_date, to_base
from funnel.stages import Stage, Status
from kpis import dirty

DEAL_COLUMNS = (
    "external_id",
    "title",
    "company",
    "industry",
    "segment",
    "channel",
    "owner",
    "currency",
    "estimated_value",
    "first_touch_at",
    "lead_at",
    "qualification_at",
    "needs_at",
    "offer_at",
    "negotiation_at",
    "closing_at",
    "status",
    "stage",
    "won_at",
    "lost_at",
    "lost_reason",
    "lost_stage",
    "offer_value",
    "offer_sent_at",
    "offer_status",
    "negotiation_rounds",
    "agreed_value",
    "discount_pct",
    "document_type",
    "final_value",
    # After the columns of issue 6's format, in its order: a file or a reader of the
    # export that knows only those columns still lines up.
    *DETAIL_FIELDS,
)
#: Columns a deals file must have; the others may be left out (read as empty).
DEAL_REQUIRED_COLUMNS = ("company", "owner", "lead_at")

SPEND_COLUMNS = ("channel", "month", "amount", "currency")
SPEND_REQUIRED_COLUMNS = ("channel", "month", "amount")

#: One row per call, e-mail, meeting or audit, of the deal with that ``external_id``.
ACTIVITY_COLUMNS = ("deal", "kind", "held_at", "outcome", "notes", "by")
ACTIVITY_REQUIRED_COLUMNS = ("deal", "kind", "held_at")

#: Free-text cells: neutralised against formulas on export, un-neutralised on import.
TEXT_COLUMNS = frozenset(
    {
        "external_id",
        "title",
        "company",
        "industry",
        "segment",
        "channel",
        "owner",
        "lost_reason",
        "heard_from",
        "contact_prompt",
        "product_scope",
        "deal",
        "outcome",
        "notes",
        "by",
    }
)
STAMP_COLUMNS = {stage: f"{stage.value}_at" for stage in stages.ORDER}
MONEY_COLUMNS = ("estimated_value", "offer_value", "agreed_value", "final_value")
MOMENT_COLUMNS = (
    "first_touch_at",
    *STAMP_COLUMNS.values(),
    "won_at",
    "lost_at",
    "offer_sent_at",
)
#: What a spreadsheet reads as the start of a formula (OWASP, "CSV injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Offer statuses a row may carry (``superseded`` belongs to versions a row cannot hold).
ROW_OFFER_STATUSES = (
    OfferStatus.DRAFT,
    OfferStatus.SENT,
    OfferStatus.ACCEPTED,
    OfferStatus.REJECTED,
)
#: A guard against a typo turning into thousands of rows; real negotiations have a few.
MAX_ROUNDS = 100
#: Existing external ids are looked up in batches of this size (SQLite's limit on query
#: parameters is far above it, and one query per batch keeps a large file cheap).
LOOKUP_BATCH = 500
MAX_AMOUNT = Decimal(10) ** 14  # money fields hold 16 digits, 2 of them decimals
#: What a ``find_*`` lookup returns for a name the row would create (``create_missing``).
MISSING = object()


# The result ---------------------------------------------------------------------------


@dataclass
class ImportResult:
    """What an import did (or, in a dry run, would do).

    ``created``/``updated`` count rows written; they are 0 when the file was rejected
    (all or nothing and a row failed), while ``valid`` still says how many rows passed.
    ``errors`` holds one ``(line, message)`` per failed row (line 1 is the header).
    """

    kind: str
    dry_run: bool = False
    valid_only: bool = False
    valid: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list = field(default_factory=list)
    created_owners: list = field(default_factory=list)
    created_companies: list = field(default_factory=list)
    created_channels: list = field(default_factory=list)
    created_reasons: list = field(default_factory=list)
    first_day: datetime.date | None = None
    last_day: datetime.date | None = None
    #: True when nothing was written because of an error (unreadable file, or a failed
    #: row without ``valid_only``).
    rejected: bool = False
    #: Dirty days recomputed after the import, when it recomputed KPIs itself.
    recomputed_days: int | None = None
    #: One ``(line, outcome, cells)`` per data row, in file order: outcome is
    #: "created", "updated", "unchanged" or "failed"; ``cells`` is the row as read
    #: ({column: text}, None for a malformed row). What the upload page previews.
    rows: list = field(default_factory=list)

    @property
    def written(self):
        return not (self.rejected or self.dry_run)

    def _cover(self, moments):
        days = [local_date(m) for m in moments if m is not None]
        if days:
            first, last = min(days), max(days)
            self.first_day = first if self.first_day is None else min(self.first_day, first)
            self.last_day = last if self.last_day is None else max(self.last_day, last)

    def _reject(self):
        self.rejected = True
        self.created = self.updated = 0
        self.created_owners, self.created_companies = [], []
        self.created_channels, self.created_reasons = [], []
        self.first_day = self.last_day = None


def report_lines(result, *, name="file"):
    """A readable report of ``result``: the commands print it, the upload page can too."""
    lines = [f"line {line}: {message}" for line, message in result.errors]
    noun = {"deals": "deals", "spend": "spend rows", "activities": "activities"}[result.kind]
    if result.rejected:
        if result.failed:
            lines.append(
                f"{name}: nothing imported: {result.failed} of "
                f"{result.failed + result.valid} rows failed "
                f"({result.valid} valid, {result.unchanged} unchanged)."
            )
        else:
            lines.append(f"{name}: nothing imported: the file could not be read.")
        return lines
    would = "would be " if result.dry_run else ""
    counts = [f"{result.created} {noun} {would}created"]
    if result.kind == "spend":
        counts.append(f"{result.updated} {would}updated")
    counts += [f"{result.unchanged} unchanged", f"{result.failed} failed"]
    lines.append(
        f"{name}: " + ", ".join(counts) + ("; dry run, nothing written." if would else ".")
    )
    for label, names in (
        ("owners", result.created_owners),
        ("companies", result.created_companies),
        ("channels", result.created_channels),
        ("lost reasons", result.created_reasons),
    ):
        if names:
            lines.append(f"New {label} {would}created: {', '.join(names)}.")
    if result.first_day:
        lines.append(f"Affected dates: {result.first_day} to {result.last_day}.")
    if result.recomputed_days is not None:
        lines.append(f"KPIs recomputed: {result.recomputed_days} dirty days.")
    return lines


# Reading ------------------------------------------------------------------------------


class FileError(Exception):
    """The file as a whole cannot be imported (encoding, header, CSV syntax)."""

    def __init__(self, line, message):
        self.line = line
        self.message = message
        super().__init__(f"line {line}: {message}")


class RowError(Exception):
    """A row cannot be imported; ``messages`` are "column: reason" strings."""

    def __init__(self, *messages):
        self.messages = list(messages)
        super().__init__("; ".join(self.messages))


def _read_text(source):
    """The text of ``source``: a path, bytes, or a text or binary file object (an
    uploaded file). UTF-8, with or without a byte-order mark."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            data = f.read()
    elif isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        data = source.read()
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FileError(line, "The file is not UTF-8 text; save it as CSV UTF-8.") from exc


def read_rows(source, columns, required=()):
    """[(line, {column: text})] of a CSV file whose header names ``columns`` (any order,
    case-insensitive; a column left out reads as empty). A header with more semicolons
    than commas means a semicolon-separated file (a spreadsheet in a Polish locale)."""
    text = _read_text(source)
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise FileError(1, "The file is empty: it needs a header row.")
        names = [name.strip().lower() for name in header]
        unknown = [n for n in names if n and n not in columns]
        if unknown:
            raise FileError(
                1,
                f"Unknown column {', '.join(unknown)}; the columns are {', '.join(columns)}.",
            )
        twice = sorted({n for n in names if n and names.count(n) > 1})
        if twice:
            raise FileError(1, f"Column {', '.join(twice)} appears more than once.")
        missing = [c for c in required if c not in names]
        if missing:
            raise FileError(1, f"Missing column {', '.join(missing)}.")
        rows = []
        previous = reader.line_num
        for cells in reader:
            line, previous = previous + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) > len(names) and any(c.strip() for c in cells[len(names) :]):
                rows.append((line, None))  # reported as a row error
                continue
            values = dict.fromkeys(columns, "")
            for name, cell in zip(names, cells, strict=False):
                if name:
                    values[name] = cell.strip()
            rows.append((line, values))
    except csv.Error as exc:
        raise FileError(reader.line_num, f"The file is not valid CSV: {exc}.") from exc
    return rows


# Cells --------------------------------------------------------------------------------


def neutralise(text):
    """A text cell a spreadsheet will not run as a formula."""
    if text and text.startswith(FORMULA_START):
        return "'" + text
    return text


def unneutralise(text):
    """The text ``neutralise`` was given."""
    if len(text) > 1 and text[0] == "'" and text[1] in "=+-@\t\r":
        return text[1:]
    return text


def _org_timezone():
    # The organisation's zone (settings.TIME_ZONE), not the zone activated for a request.
    return timezone.get_default_timezone()


def parse_moment(text):
    """An aware datetime from ISO 8601: a date alone is local midnight, a naive
    timestamp is local time (the organisation's time zone)."""
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime.datetime.combine(day, datetime.time.min, tzinfo=_org_timezone())
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"'{text}' is not an ISO 8601 date or timestamp (e.g. 2025-03-14T09:30)."
        ) from None
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=_org_timezone())
    return moment


def parse_decimal(text):
    """A decimal with '.' or ',' as the decimal separator (spaces between digit groups
    allowed)."""
    compact = re.sub(r"[\s\u00a0\u202f]", "", text)
    if "," in compact:
        if "." in compact or compact.count(",") > 1:
            raise ValueError(f"'{text}' is not a number: use '.' or ',' for decimals, not both.")
        compact = compact.replace(",", ".")
    try:
        value = Decimal(compact)
    except InvalidOperation:
        raise ValueError(f"'{text}' is not a number.") from None
    if not value.is_finite():
        raise ValueError(f"'{text}' is not a number.")
    return value


def parse_amount(text):
    value = parse_decimal(text)
    if value < 0:
        raise ValueError("An amount cannot be negative.")
    if value != value.quantize(Decimal("0.01")):
        raise ValueError("Use at most two decimal places.")
    if value >= MAX_AMOUNT:
        raise ValueError("Enter a smaller number.")
    return value


def parse_percent(text):
    value = parse_decimal(text)
    if not Decimal(0) <= value <= Decimal(100):
        raise ValueError("A discount is a percentage from 0 to 100.")
    if value != value.quantize(Decimal("0.01")):
        raise ValueError("Use at most two decimal places.")
    return value


def parse_currency(text):
    code = text.upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ValueError(f"'{text}' is not a three-letter currency code (e.g. PLN, EUR).")
    return code


def _choice(options):
    values = [str(o) for o in options]

    def parse(text):
        value = text.lower()
        if value not in values:
            raise ValueError(f"'{text}' is not one of {', '.join(values)}.")
        return value

    return parse


def parse_count(text):
    if not re.fullmatch(r"\d+", text):
        raise ValueError(f"'{text}' is not a whole number of 0 or more.")
    value = int(text)
    if value > MAX_ROUNDS:
        raise ValueError(f"At most {MAX_ROUNDS} rounds.")
    return value


def parse_score(text):
    if not re.fullmatch(r"\d+", text) or int(text) > 100:
        raise ValueError(f"'{text}' is not a whole number from 0 to 100.")
    return int(text)


def parse_date(text):
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a date (YYYY-MM-DD).") from None


def _formatted(moment):
    return timezone.localtime(moment, _org_timezone()).strftime("%Y-%m-%d %H:%M")


_DEAL_PARSERS = {
    **dict.fromkeys(MONEY_COLUMNS, parse_amount),
    **dict.fromkeys(MOMENT_COLUMNS, parse_moment),
    "currency": parse_currency,
    "discount_pct": parse_percent,
    "status": _choice(Status.values),
    "stage": _choice(Stage.values),
    "lost_stage": _choice(Stage.values),
    "offer_status": _choice(ROW_OFFER_STATUSES),
    "negotiation_rounds": parse_count,
    "document_type": _choice(DocumentType.values),
    "qualification_score": parse_score,
    "expected_close_date": parse_date,
}


def _parse_cells(cells, parsers):
    """{column: value} with text unneutralised and typed cells parsed; an empty cell is
    None (text: ""). Raises RowError naming every bad cell."""
    row, errors = {}, []
    for column, text in cells.items():
        if column in TEXT_COLUMNS:
            row[column] = unneutralise(text)
        elif not text:
            row[column] = None
        elif column in parsers:
            try:
                row[column] = parsers[column](text)
            except ValueError as exc:
                errors.append(f"{column}: {exc}")
        else:
            row[column] = text
    if errors:
        raise RowError(*errors)
    return row


def _parsed(cells, parsers, required):
    """``_parse_cells``, then a RowError naming every required cell left empty."""
    row = _parse_cells(cells, parsers)
    missing = [f"{column}: Required." for column in required if _empty(row[column])]
    if missing:
        raise RowError(*missing)
    return row


def _batches(values):
    """``values`` (a list) in slices of ``LOOKUP_BATCH``: one query each."""
    for start in range(0, len(values), LOOKUP_BATCH):
        yield values[start : start + LOOKUP_BATCH]


def _validation_messages(exc, default, fields):
    """ "column: message" strings of a ValidationError. ``fields`` maps the model's or
    domain's field names to CSV columns; other fields fall back to ``default``, and a
    missing exchange rate is the currency's problem."""
    messages = []
    if hasattr(exc, "error_dict"):
        for name, errors in exc.error_dict.items():
            column = fields.get(name) or (
                name if name in DEAL_COLUMNS and name != NON_FIELD_ERRORS else default
            )
            for error in errors:
                messages += [f"{column}: {text}" for text in error]
    else:
        for error in exc.error_list:
            column = "currency" if error.code == "no_rate" else default
            messages += [f"{column}: {text}" for text in error]
    return messages


@contextmanager
def _column(default, **fields):
    """Turn a refusal of the domain (or of a model's validation) into a row error
    naming the CSV column it is about."""
    try:
        yield
    except ValidationError as exc:
        raise RowError(*_validation_messages(exc, default, fields)) from exc
    except domain.StaleDealError as exc:
        raise RowError(f"{default}: {exc}") from exc


# Lookups ------------------------------------------------------------------------------


class _Lookups:
    """Owners, channels, lost reasons and companies of one file, each looked up once
    (users, channels and reasons are few: loaded up front; companies on first use).

    What a row creates (or changes) is remembered until the row ends: if the row's
    savepoint is rolled back, those entries leave the caches too."""

    def __init__(self, *, create_missing, owners=None):
        self.create_missing = create_missing
        # A scope (a User queryset) limits the owners a row may name, and no owner is
        # created: a manager imports deals for the people they lead only.
        self.owner_scope = owners is not None
        self.users, self.emails = {}, defaultdict(list)
        for user in User.objects.all() if owners is None else owners:
            self.users[user.username.casefold()] = user
            if user.email:
                self.emails[user.email.casefold()].append(user)
        self.channels = {c.name.casefold(): c for c in Channel.objects.all()}
        self.reasons = {}
        self.reason_position = 0
        for reason in LostReason.objects.all():
            self._index_reason(reason)
            self.reason_position = max(self.reason_position, reason.position)
        self.companies = {}
        #: {name: company, or None for none}, read ahead by preload_companies
        self.named = {}
        self._undo = []
        self.pending = defaultdict(list)

    def _index_reason(self, reason):
        for key in (reason.code, reason.name_en, reason.name_pl):
            if key:
                self.reasons.setdefault(key.casefold(), reason)

    # One row's life.

    def begin_row(self):
        self._undo, self.pending = [], defaultdict(list)

    def row_failed(self):
        for cache, key in self._undo:
            cache.pop(key, None)
        self.begin_row()

    def row_succeeded(self, result):
        result.created_owners += self.pending["owners"]
        result.created_companies += self.pending["companies"]
        result.created_channels += self.pending["channels"]
        result.created_reasons += self.pending["reasons"]
        self.begin_row()

    def _remember(self, cache, key, value):
        cache[key] = value
        self._undo.append((cache, key))

    # Lookups.

    def find_owner(self, value, column="owner"):
        """The user ``value`` names, or MISSING when ``owner`` would create it; raises
        the row's error (about ``column``) when it is unknown and may not be created.
        Writes nothing."""
        key = value.casefold()
        if key in self.users:
            return self.users[key]
        matches = self.emails.get(key, [])
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise RowError(f"{column}: '{value}' is the e-mail of several users; use a username.")
        if self.owner_scope:
            raise RowError(
                f"{column}: '{value}' is not one of the people you lead (only an admin can "
                "import deals for anyone, or create users)."
            )
        if not self.create_missing:
            raise RowError(f"{column}: Unknown user '{value}'.")
        return MISSING

    def owner(self, value):
        found = self.find_owner(value)
        if found is not MISSING:
            return found
        key = value.casefold()
        user = User(
            username=value,
            email=value if "@" in value else "",
            role=Role.REP,
            is_active=True,
        )
        user.set_unusable_password()
        with _column("owner", username="owner", email="owner"):
            user.full_clean()
        user.save()
        self._remember(self.users, key, user)
        self.pending["owners"].append(user.username)
        return user

    def find_channel(self, value):
        key = value.casefold()
        if key in self.channels:
            return self.channels[key]
        if not self.create_missing:
            raise RowError(f"channel: Unknown channel '{value}'.")
        return MISSING

    def channel(self, value):
        found = self.find_channel(value)
        if found is not MISSING:
            return found
        key = value.casefold()
        channel = Channel(name=value)
        with _column("channel", name="channel"):
            channel.full_clean()
        channel.save()
        self._remember(self.channels, key, channel)
        self.pending["channels"].append(channel.name)
        return channel

    def find_reason(self, value):
        key = value.casefold()
        if key in self.reasons:
            return self.reasons[key]
        code = _reason_code(value)
        if code and code in self.reasons:
            return self.reasons[code]
        if not self.create_missing:
            raise RowError(f"lost_reason: Unknown lost reason '{value}'.")
        if not code:
            raise RowError(f"lost_reason: '{value}' cannot be turned into a reason code.")
        return MISSING

    def reason(self, value):
        found = self.find_reason(value)
        if found is not MISSING:
            return found
        key, code = value.casefold(), _reason_code(value)
        reason = LostReason(
            code=code,
            name_en=value[:100],
            name_pl=value[:100],
            position=self.reason_position + 1,
        )
        with _column("lost_reason"):
            reason.full_clean()
        reason.save()
        self.reason_position += 1
        for k in {key, code}:
            self._remember(self.reasons, k, reason)
        self.pending["reasons"].append(reason.code)
        return reason

    def find_company(self, name):
        """The company named ``name`` (exactly, else whatever the case), or None."""
        key = name.casefold()
        company = self.companies.get(key)
        if company is None:
            if name in self.named:
                company = self.named.pop(name)  # read by preload_companies
            else:
                company = (
                    Company.objects.filter(name=name).first()
                    or Company.objects.filter(name__iexact=name).first()
                )
            if company is not None:
                self.companies[key] = company
        return company

    def preload_companies(self, names):
        """Look the companies of ``names`` up a batch at a time, as ``find_company``
        would one by one: exactly, else by the database's own case-insensitive match
        (``iexact`` compares UPPER() of both sides). A name several companies match
        whatever the case is left to ``find_company``."""
        names = list(dict.fromkeys(names))
        for batch in _batches(names):
            exact = {c.name: c for c in Company.objects.filter(name__in=batch).order_by()}
            self.named.update(exact)
            rest = [name for name in batch if name not in exact]
            if not rest:
                continue
            with connection.cursor() as cursor:
                cursor.execute("SELECT " + ", ".join(["UPPER(%s)"] * len(rest)), rest)
                uppers = cursor.fetchone()
            matches = defaultdict(list)
            for company in (
                Company.objects.annotate(upper=Upper("name"))
                .filter(upper__in=set(uppers))
                .order_by()
            ):
                matches[company.upper].append(company)
            for name, upper in zip(rest, uppers, strict=True):
                found = matches.get(upper, [])
                if len(found) < 2:
                    self.named[name] = found[0] if found else None

    def company(self, name, *, industry, segment):
        """Get or create the company by name; fill its industry and segment if empty."""
        key = name.casefold()
        company = self.find_company(name)
        if company is None:
            company = Company(name=name, industry=industry, segment=segment)
            with _column("company", name="company"):
                company.full_clean()
            company.save()
            self._remember(self.companies, key, company)
            self.pending["companies"].append(company.name)
            return company
        changed = company_fill_in(company, industry=industry, segment=segment)
        if changed:
            for f in changed:
                setattr(company, f, {"industry": industry, "segment": segment}[f])
            # The change is undone with the row's savepoint: drop the cached copy too.
            self._undo.append((self.companies, key))
            with _column("company"):
                company.full_clean(validate_unique=False)
            company.save(update_fields=changed)
        return company


def company_fill_in(company, *, industry, segment):
    """The fields of ``company`` a row fills in: its industry and segment, if empty."""
    wanted = {"industry": industry, "segment": segment}
    return [f for f, value in wanted.items() if value and not getattr(company, f)]


def _reason_code(value):
    return slugify(value).replace("-", "_")[:40]


# Deals --------------------------------------------------------------------------------


@dataclass
class _Plan:
    """A row's stage stamps as the domain will record them."""

    #: stage -> moment, every stage up to the last stamped one; a stage passed by a skip
    #: takes the moment of the next non-empty stamp.
    stamps: dict
    #: [(target stage, moment)]: one forward move per distinct moment after lead.
    moves: list
    last_stage: Stage


#: What an imported stay of no length lasts: the next stage is entered this much later,
#: on the same day (``_stays_of_no_length``).
NO_LENGTH = datetime.timedelta(microseconds=1)


def _worked_in(row, stage):
    """Whether the row shows work done in ``stage``: an offer, negotiation rounds."""
    if stage == Stage.OFFER:
        return row["offer_value"] is not None
    if stage == Stage.NEGOTIATION:
        return bool(row["negotiation_rounds"])
    return False


def _stays_of_no_length(row):
    """Stamps equal to the next stamped stage's are a skip (domain.md: a skipped stage
    is stamped with the moment of the move that passed it), except for a stage the row
    shows was worked in (an offer, rounds): date-only history often has an offer sent
    and answered, or a negotiation concluded, the day it began. Such a stay is kept,
    one microsecond long: the next stage is entered that much later (the same day), and
    an outcome given at that moment follows it. Done on the row, in place, before
    anything reads its moments."""
    previous_stage, previous, original = Stage.LEAD, row["lead_at"], row["lead_at"]
    for stage in stages.ORDER[1:]:
        column = STAMP_COLUMNS[stage]
        moment = row[column]
        if moment is None:
            continue
        if original <= moment <= previous:  # (one earlier than original is refused)
            if _worked_in(row, previous_stage):
                row[column] = previous + NO_LENGTH
            else:
                row[column] = previous  # passed by a skip, at the moment moved
        previous_stage, previous, original = stage, row[column], moment
    for column in ("won_at", "lost_at"):
        if row[column] is not None and original <= row[column] < previous:
            row[column] = previous


def _plan(row):
    given = [(stage, row[STAMP_COLUMNS[stage]]) for stage in stages.ORDER]
    last = max(i for i, (_, moment) in enumerate(given) if moment is not None)
    errors = []
    previous_column, previous = "lead_at", row["lead_at"]
    for stage, moment in given[1 : last + 1]:
        if moment is None:
            continue
        column = STAMP_COLUMNS[stage]
        if moment < previous:
            errors.append(
                f"{column}: It precedes {previous_column} ({_formatted(previous)}); "
                "stage stamps follow the funnel's order."
            )
        previous_column, previous = column, moment
    if errors:
        raise RowError(*errors)
    stamps, following = {}, None
    for stage, moment in reversed(given[: last + 1]):
        following = moment if moment is not None else following
        stamps[stage] = following
    moves = []
    for stage in stages.ORDER[1 : last + 1]:
        if moves and moves[-1][1] == stamps[stage]:
            moves[-1] = (stage, stamps[stage])
        else:
            moves.append((stage, stamps[stage]))
    return _Plan(stamps=stamps, moves=moves, last_stage=stages.ORDER[last])


def _empty(value):
    return value is None or value == ""


def _check_deal_row(row, plan):
    """The rules a row must follow beyond what each transition checks, so that the
    replay is well defined and errors name the column at fault."""
    errors = []
    status = row["status"] or Status.OPEN
    stamps = plan.stamps
    after_offer = stamps.get(Stage.NEGOTIATION)
    # Outcome.
    if row["stage"] and row["stage"] != plan.last_stage:
        errors.append(
            f"stage: '{row['stage']}' is not the last stamped stage ({plan.last_stage.value})."
        )
    if status != Status.WON and row["won_at"]:
        errors.append(f"won_at: Only a won deal has won_at (status is {status}).")
    if status != Status.LOST:
        for column in ("lost_at", "lost_reason", "lost_stage"):
            if row[column]:
                errors.append(f"{column}: Only a lost deal has {column} (status is {status}).")
    if status == Status.WON:
        for column in ("closing_at", "document_type", "final_value", "won_at"):
            if _empty(row[column]):
                errors.append(f"{column}: A won deal needs {column}.")
    if status == Status.LOST:
        for column in ("lost_at", "lost_reason"):
            if not row[column]:
                errors.append(f"{column}: A lost deal needs {column}.")
        if row["lost_stage"] and row["lost_stage"] != plan.last_stage:
            errors.append(
                f"lost_stage: '{row['lost_stage']}' is not the last stamped stage "
                f"({plan.last_stage.value})."
            )
    # Offer.
    offer_status, sent_at = row["offer_status"], row["offer_sent_at"]
    if row["offer_value"] is None:
        for column in ("offer_sent_at", "offer_status"):
            if row[column]:
                errors.append(f"offer_value: An offer with {column} needs offer_value.")
    elif not row["offer_at"]:
        errors.append("offer_at: An offer is prepared in the offer stage: offer_at is empty.")
    if offer_status in (OfferStatus.SENT, OfferStatus.ACCEPTED, OfferStatus.REJECTED):
        if not sent_at:
            errors.append(f"offer_status: A {offer_status} offer needs offer_sent_at.")
    elif offer_status == OfferStatus.DRAFT and sent_at:
        errors.append("offer_status: A draft offer has no offer_sent_at.")
    if sent_at and row["offer_at"]:
        if sent_at < row["offer_at"]:
            errors.append(
                f"offer_sent_at: The offer cannot be sent before offer_at ({_formatted(row['offer_at'])})."
            )
        elif after_offer and sent_at > after_offer:
            column = "negotiation_at" if row["negotiation_at"] else "closing_at"
            errors.append(
                f"offer_sent_at: The offer must be sent by {column} ({_formatted(after_offer)})."
            )
        elif status == Status.LOST and row["lost_at"] and sent_at > row["lost_at"]:
            errors.append("offer_sent_at: The offer cannot be sent after lost_at.")
    # Negotiation.
    rounds = row["negotiation_rounds"] or 0
    if rounds:
        if not row["negotiation_at"]:
            errors.append("negotiation_rounds: Rounds need a negotiation: negotiation_at is empty.")
        elif all(row[c] is None for c in ("agreed_value", "offer_value", "estimated_value")):
            errors.append(
                "negotiation_rounds: A round proposes a value: give agreed_value, "
                "offer_value or estimated_value."
            )
    # Terms.
    if (
        row["discount_pct"] is not None
        and row["agreed_value"] is None
        and offer_status != OfferStatus.ACCEPTED
    ):
        errors.append("discount_pct: A discount needs agreed_value (or an accepted offer).")
    if row["closing_at"] and row["agreed_value"] is None and offer_status != OfferStatus.ACCEPTED:
        errors.append(
            "agreed_value: Closing needs agreed terms: give agreed_value (or an accepted offer)."
        )
    # Closing document.
    if bool(row["document_type"]) != (row["final_value"] is not None):
        missing = "final_value" if row["document_type"] else "document_type"
        present = "document_type" if row["document_type"] else "final_value"
        errors.append(f"{missing}: A closing document with {present} needs {missing}.")
    elif row["document_type"] and not row["closing_at"]:
        errors.append("document_type: A closing document needs closing_at.")
    if errors:
        raise RowError(*errors)


class _DealImporter:
    columns, required = DEAL_COLUMNS, DEAL_REQUIRED_COLUMNS

    def __init__(self, *, by, create_missing, owners=None, bulk=True):
        self.by = by
        self.lookups = _Lookups(create_missing=create_missing, owners=owners)
        self.existing_ids = set()
        self.seen_ids = {}
        self.bulk = BulkDeals(by=by, lookups=self.lookups) if bulk else None

    def preload(self, rows):
        ids = sorted({unneutralise(cells["external_id"]) for _, cells in rows if cells} - {""})
        for batch in _batches(ids):
            self.existing_ids.update(
                Deal.objects.filter(external_id__in=batch).values_list("external_id", flat=True)
            )
        self.lookups.preload_companies(
            unneutralise(cells["company"]) for _, cells in rows if cells and cells["company"]
        )

    def run(self, line, cells, result):
        # A row already imported is skipped before anything else is read: re-importing a
        # file is idempotent even after the funnel's rules have moved on.
        external_id = unneutralise(cells["external_id"])
        if external_id:
            if external_id in self.seen_ids:
                raise RowError(
                    f"external_id: '{external_id}' appears again (line {self.seen_ids[external_id]})."
                )
            self.seen_ids[external_id] = line
            if external_id in self.existing_ids:
                return "unchanged"
        row = _parsed(cells, _DEAL_PARSERS, DEAL_REQUIRED_COLUMNS)
        _stays_of_no_length(row)
        plan = _plan(row)
        _check_deal_row(row, plan)
        bulk = self.bulk
        if bulk is None or not bulk.take(row, plan):
            if bulk is not None:
                bulk.flush()  # the companies this row may share, written first
            # Its own savepoint: a refusal undoes whatever the row wrote.
            with transaction.atomic():
                self._replay(row, plan)
        result._cover([*plan.stamps.values(), row["offer_sent_at"], row["won_at"], row["lost_at"]])
        return "created"

    def finish(self, *, write):
        if self.bulk is not None:
            self.bulk.finish(write=write)

    def _references(self, row):
        """Owner, channel, lost reason and company, every unknown one reported."""
        found, errors = {}, []
        lookups = self.lookups
        for name, value, lookup in (
            ("owner", row["owner"], lookups.owner),
            ("channel", row["channel"], lookups.channel),
            ("reason", row["lost_reason"], lookups.reason),
        ):
            try:
                found[name] = lookup(value) if value else None
            except RowError as exc:
                errors += exc.messages
        if errors:
            raise RowError(*errors)
        found["company"] = lookups.company(
            row["company"], industry=row["industry"], segment=row["segment"]
        )
        return found

    def _replay(self, row, plan):
        by = self.by
        refs = self._references(row)
        with _column(
            "lead_at",
            entered_lead_at="lead_at",
            contact="company",
            owner="owner",
            company="company",
        ):
            deal = domain.create_deal(
                by=by,
                owner=refs["owner"],
                company=refs["company"],
                title=row["title"] or refs["company"].name,
                at=row["lead_at"],
                channel=refs["channel"],
                currency=row["currency"] or base_currency(),
                estimated_value=row["estimated_value"],
                first_touch_at=row["first_touch_at"],
                external_id=row["external_id"] or None,
                industry=row["industry"],
                segment=row["segment"],
                **{name: row[name] for name in DETAIL_FIELDS},
            )
        offer = None
        responded = False
        agreed = False

        def respond(at):
            nonlocal responded
            responded = True
            if row["offer_status"] not in (OfferStatus.ACCEPTED, OfferStatus.REJECTED):
                return
            answer = (
                domain.accept_offer
                if row["offer_status"] == OfferStatus.ACCEPTED
                else domain.reject_offer
            )
            with _column("offer_status", agreed_value="offer_value"):
                answer(offer, by=by, at=at)
            # Accepting agrees the terms through another copy of the deal.
            deal.refresh_from_db()

        def agree(at, column):
            nonlocal agreed
            agreed = True
            # No agreed_value: the accepted offer's value, with the row's discount.
            value, discount = agreed_terms(row, deal.agreed_value)
            if value is None or (deal.agreed_value == value and discount is None):
                return  # nothing to agree, or the accepted offer agreed it already
            with _column("agreed_value", at=column):
                domain.agree_terms(deal, agreed_value=value, discount_pct=discount, by=by, at=at)

        for target, moment in plan.moves:
            column = STAMP_COLUMNS[target]
            after_offer = stages.index(target) >= stages.index(Stage.NEGOTIATION)
            if after_offer and offer is not None and offer.sent_at and not responded:
                respond(moment)
            if target == Stage.CLOSING:
                agree(moment, column)
            with _column(column, at=column, stage=column):
                domain.move_forward(deal, target, by=by, at=moment)
            if target == Stage.OFFER and row["offer_value"] is not None:
                with _column("offer_value", value="offer_value", prep_started_at="offer_at"):
                    offer = domain.start_offer(
                        deal,
                        value=row["offer_value"],
                        by=by,
                        at=moment,
                        prep_started_at=moment,
                    )
                if row["offer_sent_at"]:
                    with _column("offer_sent_at", sent_at="offer_sent_at"):
                        domain.send_offer(offer, by=by, at=row["offer_sent_at"])
            if target == Stage.NEGOTIATION:
                proposed = next(
                    (
                        row[c]
                        for c in ("agreed_value", "offer_value", "estimated_value")
                        if row[c] is not None
                    ),
                    None,
                )
                for _ in range(row["negotiation_rounds"] or 0):
                    with _column(
                        "negotiation_rounds",
                        held_at="negotiation_at",
                        proposed_value="negotiation_rounds",
                        discount_pct="discount_pct",
                    ):
                        domain.add_round(
                            deal,
                            held_at=moment,
                            proposed_value=proposed,
                            discount_pct=row["discount_pct"] or 0,
                            by=by,
                        )
            if target == Stage.CLOSING and row["document_type"]:
                with _column(
                    "document_type",
                    final_value="final_value",
                    document_type="document_type",
                    issue_date="closing_at",
                ):
                    domain.save_closing_document(
                        deal,
                        document_type=row["document_type"],
                        issue_date=local_date(moment),
                        final_value=row["final_value"],
                        by=by,
                    )
        status = row["status"] or Status.OPEN
        if offer is not None and offer.sent_at and not responded:
            respond(answered_at(row, status))
        if not agreed and agreed_terms(row, deal.agreed_value)[0] is not None:
            # Terms agreed but the deal never reached closing: agreed at its latest event.
            agree(deal.last_event_at, "agreed_value")
        if status == Status.WON:
            with _column("won_at", at="won_at"):
                domain.win(deal, by=by, at=row["won_at"])
        elif status == Status.LOST:
            with _column("lost_at", at="lost_at", lost_reason="lost_reason"):
                domain.mark_lost(deal, refs["reason"], by=by, at=row["lost_at"], note="")
        return deal


def _run_rows(rows, importer, result, *, valid_only, dry_run):
    """Every row inside one transaction, committed only if the file passed (or
    ``valid_only``) and this is not a dry run. A row that writes as it goes does so in
    its own savepoint (the importer's ``run`` opens it), so a refusal undoes it."""
    lookups = importer.lookups
    with transaction.atomic():
        importer.preload(rows)
        with dirty.batched():
            for line, cells in rows:
                lookups.begin_row()
                try:
                    if cells is None:
                        raise RowError("The row has more cells than the header has columns.")
                    outcome = importer.run(line, cells, result)
                except (RowError, DatabaseError) as exc:
                    lookups.row_failed()
                    result.failed += 1
                    message = (
                        "; ".join(exc.messages)
                        if isinstance(exc, RowError)
                        else f"The database refused the row: {exc}"
                    )
                    result.errors.append((line, message))
                    result.rows.append((line, "failed", cells))
                    continue
                lookups.row_succeeded(result)
                result.rows.append((line, outcome, cells))
                if outcome == "unchanged":
                    result.unchanged += 1
                    continue
                result.valid += 1
                if outcome == "created":
                    result.created += 1
                else:
                    result.updated += 1
        if result.failed and not valid_only:
            result._reject()
        importer.finish(write=not (dry_run or result.rejected))
        if dry_run or result.rejected:
            transaction.set_rollback(True)


def _import(kind, source, importer, *, valid_only, dry_run, recompute):
    """Read ``source`` (the ``importer``'s columns) and run every row through it: the
    one course of every import."""
    result = ImportResult(kind=kind, dry_run=dry_run, valid_only=valid_only)
    try:
        rows = read_rows(source, importer.columns, importer.required)
    except FileError as exc:
        result.errors.append((exc.line, exc.message))
        result._reject()
        return result
    _run_rows(rows, importer, result, valid_only=valid_only, dry_run=dry_run)
    return _finish(result, recompute=recompute)


def _finish(result, *, recompute):
    if result.written and (result.created or result.updated):
        from kpis.company import forget_inputs

        # The hour's trailing statistics (stage probabilities, stall limits) predate
        # the rows just loaded: the next recompute takes them again.
        forget_inputs()
    if recompute and result.written and (result.created or result.updated):
        from kpis.recompute import recompute_all_dirty

        result.recomputed_days = recompute_all_dirty()
    return result


def import_deals(
    source,
    *,
    by=None,
    create_missing=False,
    valid_only=False,
    dry_run=False,
    recompute=False,
    owners=None,
    bulk=True,
):
    """Import a deals CSV (see the module docstring and the ``import_deals`` command).

    ``source``: a path, bytes, or a text or binary file object. ``by``: the importing
    user (recorded as the actor of every transition), or None. ``recompute``: recompute
    the dirty KPI days before returning (the command does); otherwise the dirty marks
    the domain wrote are left to the Celery task enqueued on commit and the sweep.
    ``owners``: a User queryset the owners must come from (the upload page and the API
    pass the people a manager leads); unknown owners are then reported, never created.
    ``bulk``: write new deals in bulk (funnel/import_bulk.py); False replays every row
    through the domain functions (the reference the bulk path is tested against).
    """
    importer = _DealImporter(by=by, create_missing=create_missing, owners=owners, bulk=bulk)
    return _import(
        "deals",
        source,
        importer,
        valid_only=valid_only,
        dry_run=dry_run,
        recompute=recompute,
    )


# Spend --------------------------------------------------------------------------------


def parse_month(text):
    match = re.fullmatch(r"(\d{4})-(\d{2})(?:-01)?", text)
    if not match:
        raise ValueError(f"'{text}' is not a month as YYYY-MM.")
    try:
        return datetime.date(int(match[1]), int(match[2]), 1)
    except ValueError:
        raise ValueError(f"'{text}' is not a month as YYYY-MM.") from None


_SPEND_PARSERS = {"month": parse_month, "amount": parse_amount, "currency": parse_currency}


class _RowImporter:
    """An importer whose rows each run in their own savepoint (a refusal undoes what
    the row wrote) and write nothing at the end; ``_row`` gets the parsed cells."""

    columns = required = ()
    parsers = {}

    def preload(self, rows):
        pass

    def finish(self, *, write):
        pass

    def run(self, line, cells, result):
        with transaction.atomic():
            return self._row(line, _parsed(cells, self.parsers, self.required), result)


class _SpendImporter(_RowImporter):
    columns, required, parsers = SPEND_COLUMNS, SPEND_REQUIRED_COLUMNS, _SPEND_PARSERS

    def __init__(self, *, create_missing):
        self.lookups = _Lookups(create_missing=create_missing)
        self.seen = {}
        self.existing = {}

    def preload(self, rows):
        months = set()
        for _, cells in rows:
            if cells:
                with suppress(ValueError):
                    months.add(parse_month(cells["month"]))
        for spend in MarketingSpend.objects.filter(month__in=months):
            self.existing[(spend.channel_id, spend.month)] = spend

    def _row(self, line, row, result):
        currency = row["currency"] or base_currency()
        channel = self.lookups.channel(row["channel"])
        key = (channel.pk, row["month"])
        if key in self.seen:
            raise RowError(
                f"month: {row['month']:%Y-%m} of channel '{channel.name}' appears again "
                f"(line {self.seen[key]})."
            )
        self.seen[key] = line
        with _column("amount", currency="currency"):
            amount_base = to_base(row["amount"], currency, row["month"])
        spend = self.existing.get(key)
        if spend is not None and (spend.amount, spend.currency, spend.amount_base) == (
            row["amount"],
            currency,
            amount_base,
        ):
            return "unchanged"
        outcome = "created" if spend is None else "updated"
        spend = spend or MarketingSpend(channel=channel, month=row["month"])
        # Changed in memory now, undone with the row's savepoint if it fails.
        self.lookups._remember(self.existing, key, spend)
        spend.amount, spend.currency, spend.amount_base = row["amount"], currency, amount_base
        with _column("amount", currency="currency", month="month"):
            spend.full_clean(validate_unique=False, validate_constraints=False)
        # Saving marks the month's days dirty (kpis/signals.py).
        spend.save()
        result._cover([row["month"], _month_end(row["month"])])
        return outcome


def _month_end(month):
    following = (month.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)
    return following - datetime.timedelta(days=1)


def import_spend(source, *, create_missing=False, valid_only=False, dry_run=False, recompute=False):
    """Import marketing spend (channel, month, amount, currency): one row per channel
    and month, created or updated; the amount is converted to the base currency at the
    rate of the month's first day."""
    importer = _SpendImporter(create_missing=create_missing)
    return _import(
        "spend", source, importer, valid_only=valid_only, dry_run=dry_run, recompute=recompute
    )


# Activities ---------------------------------------------------------------------------

_ACTIVITY_PARSERS = {"kind": _choice(ActivityKind.values), "held_at": parse_moment}


class _ActivityImporter(_RowImporter):
    """Each row logs one activity through ``domain.log_activity`` (which marks its
    deal's days dirty). An activity of the same deal, kind and moment already recorded
    is "unchanged": re-importing a file adds nothing."""

    columns, required, parsers = ACTIVITY_COLUMNS, ACTIVITY_REQUIRED_COLUMNS, _ACTIVITY_PARSERS

    def __init__(self, *, by, deals=None, owners=None):
        self.by = by
        # Who may log (``by``): existing users only, within ``owners`` when given.
        self.lookups = _Lookups(create_missing=False, owners=owners)
        self.scope = deals  # the deals a manager may see; None: every deal
        self.deals = {}
        self.seen = {}
        self.existing = set()

    def preload(self, rows):
        ids = sorted({unneutralise(cells["deal"]) for _, cells in rows if cells and cells["deal"]})
        deals = Deal.objects.all() if self.scope is None else self.scope
        for batch in _batches(ids):
            self.deals.update((d.external_id, d) for d in deals.filter(external_id__in=batch))
        for batch in _batches([deal.pk for deal in self.deals.values()]):
            self.existing.update(
                Activity.objects.filter(deal_id__in=batch).values_list("deal_id", "kind", "held_at")
            )

    def _row(self, line, row, result):
        deal = self.deals.get(row["deal"])
        if deal is None:
            whose = "you can see " if self.scope is not None else ""
            raise RowError(f"deal: No deal {whose}has the external_id '{row['deal']}'.")
        # An existing user (the lookups create nobody here), else the importing one.
        by = self.lookups.find_owner(row["by"], column="by") if row["by"] else self.by
        key = (deal.pk, row["kind"], row["held_at"])
        if key in self.seen:
            raise RowError(
                f"held_at: the same {row['kind']} of deal '{row['deal']}' at this moment "
                f"appears again (line {self.seen[key]})."
            )
        self.seen[key] = line
        if key in self.existing:
            return "unchanged"
        with _column("held_at", held_at="held_at", kind="kind", outcome="outcome", notes="notes"):
            domain.log_activity(
                deal,
                kind=row["kind"],
                held_at=row["held_at"],
                by=by,
                outcome=row["outcome"],
                notes=row["notes"],
            )
        result._cover([row["held_at"]])
        return "created"


def import_activities(
    source, *, by=None, valid_only=False, dry_run=False, recompute=False, deals=None, owners=None
):
    """Import calls, e-mails, meetings and audits (deal, kind, held_at, outcome, notes,
    by): each row is logged on the deal whose ``external_id`` is in ``deal``, by the
    user named in ``by`` (a username or e-mail; empty: ``by``, the importing user).
    ``deals``/``owners``: the deals a manager may see and the people they lead (the
    upload page and the API pass them); None: every deal and user."""
    importer = _ActivityImporter(by=by, deals=deals, owners=owners)
    return _import(
        "activities", source, importer, valid_only=valid_only, dry_run=dry_run, recompute=recompute
    )


def export_activities(out, activities=None):
    """Write ``activities`` (by default every activity of a deal with an external id,
    the key an import finds its deal by) to ``out`` as an activities CSV; return how
    many."""
    if activities is None:
        activities = Activity.objects.all()
    activities = (
        activities.filter(deal__external_id__isnull=False)
        .select_related("deal", "by")
        .order_by("held_at", "id")
    )
    rows = map(activity_row, activities.iterator(chunk_size=EXPORT_CHUNK))
    return _write_csv(out, ACTIVITY_COLUMNS, rows)


def activity_row(activity):
    """One activity as the cells of an activities CSV row."""
    return _cells(
        {
            "deal": activity.deal.external_id,
            "kind": activity.kind,
            "held_at": activity.held_at,
            "outcome": activity.outcome,
            "notes": activity.notes,
            "by": activity.by.username if activity.by else "",
        }
    )


def _cells(values):
    """{column: value} as CSV cells: free text neutralised against formulas."""
    return {
        column: neutralise(value) if column in TEXT_COLUMNS else _cell(value)
        for column, value in values.items()
    }


def _write_csv(out, columns, rows):
    """A header of ``columns`` and ``rows`` ({column: cell}) to ``out``; how many rows."""
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    return count


# Export -------------------------------------------------------------------------------

#: Deals written per database round trip (with their offers): bounded memory on a big
#: export, few queries on a small one.
EXPORT_CHUNK = 2_000


def _exported_offer(deal):
    """The one offer a row can hold: the latest version sent by the time the deal left
    ``offer`` (the one that took it on), else the latest version."""
    offers = sorted(deal.offers.all(), key=lambda o: o.version)
    if not offers:
        return None
    left_offer = deal.entered_negotiation_at
    sent = [o for o in offers if o.sent_at and (left_offer is None or o.sent_at <= left_offer)]
    return sent[-1] if sent else offers[-1]


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        return timezone.localtime(value, _org_timezone()).isoformat()
    return str(value)


def _rounds_count(deal):
    # Annotated by export_deals; a single deal counts its rounds.
    count = getattr(deal, "rounds_count", None)
    return deal.rounds.count() if count is None else count


def deal_row(deal):
    """{column: cell} of one deal, as ``export_deals`` writes it."""
    offer = _exported_offer(deal)
    offer_status = None
    if offer is not None:
        offer_status = offer.status
        if offer_status == OfferStatus.SUPERSEDED:
            offer_status = OfferStatus.SENT if offer.sent_at else OfferStatus.DRAFT
    document = getattr(deal, "closing_document", None)
    values = {
        "external_id": deal.external_id or "",
        "title": deal.title,
        "company": deal.company.name,
        "industry": deal.industry,
        "segment": deal.segment,
        "channel": deal.channel.name if deal.channel else "",
        "owner": deal.owner.username,
        "currency": deal.currency,
        "estimated_value": deal.estimated_value,
        "first_touch_at": deal.first_touch_at,
        **{name: getattr(deal, name) for name in DETAIL_FIELDS},
        **{column: deal.stamp(stage) for stage, column in STAMP_COLUMNS.items()},
        "status": deal.status,
        "stage": deal.stage,
        "won_at": deal.won_at,
        "lost_at": deal.lost_at,
        "lost_reason": deal.lost_reason.code if deal.lost_reason else "",
        "lost_stage": deal.lost_stage,
        "offer_value": offer.value if offer else None,
        "offer_sent_at": offer.sent_at if offer else None,
        "offer_status": offer_status,
        "negotiation_rounds": _rounds_count(deal),
        "agreed_value": deal.agreed_value,
        "discount_pct": deal.discount_pct,
        "document_type": document.document_type if document else None,
        "final_value": document.final_value if document else None,
    }
    return _cells(values)


def export_deals(out, deals=None):
    """Write ``deals`` (a queryset, by default every deal: pass ``visible_to(user)`` from
    a web door) to the text stream ``out`` as a deals CSV; return how many."""
    if deals is None:
        deals = Deal.objects.all()
    deals = (
        deals.select_related("owner", "company", "channel", "lost_reason", "closing_document")
        .prefetch_related("offers")
        .annotate(rounds_count=Count("rounds"))
        .order_by("entered_lead_at", "id")
    )
    return _write_csv(out, DEAL_COLUMNS, map(deal_row, deals.iterator(chunk_size=EXPORT_CHUNK)))


__all__ = [
    "ACTIVITY_COLUMNS",
    "DEAL_COLUMNS",
    "SPEND_COLUMNS",
    "FileError",
    "ImportResult",
    "RowError",
    "deal_row",
    "export_activities",
    "export_deals",
    "import_activities",
    "import_deals",
    "import_spend",
    "neutralise",
    "read_rows",
    "report_lines",
    "unneutralise",
]
