"""The fast path of the deals import: new deals replayed in memory, written in bulk.

``funnel/importing.py`` replays a row through ``funnel/domain.py`` one transition at a
time: some thirty queries a row. For a row that creates a deal, :class:`BulkDeals`
replays the same transitions in memory instead (the idea of ``funnel/demo.py``'s bulk
executor), with every check those functions make, and writes the deals and their rows
a chunk at a time (``COPY`` on PostgreSQL, ``bulk_create`` elsewhere): the same deals,
stamps, history, offers, rounds, closing documents, change log, versions, base-currency
amounts and dirty days, with no query per row.

A row the replay cannot vouch for is not refused here: :meth:`BulkDeals.take` returns
False and the importer runs it through the domain functions, which refuse it with their
own message (or, for a row whose owner, channel or lost reason must be created first,
import it). So every error still comes from one place, and a check missed here costs
speed, never a different answer. ``tests/funnel/test_import_bulk.py`` imports the same
files both ways and compares every table.
"""

import bisect
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection
from django.utils import timezone

from funnel import domain, stages
from funnel.bulk import (
    CHANGE_COLUMNS,
    DOCUMENT_COLUMNS,
    HISTORY_COLUMNS,
    INSERT_BATCH_SIZE,
    OFFER_COLUMNS,
    ROUND_COLUMNS,
    cents,
    check_columns,
    insert_rows,
    model_columns,
    plain,
)
from funnel.models import (
    ClosingDocument,
    Company,
    Deal,
    DealChange,
    ExchangeRate,
    NegotiationRound,
    Offer,
    OfferStatus,
    StageEvent,
    StageHistory,
)
from funnel.money import base_currency, local_date, quantize
from funnel.stages import STAMP_FIELDS, Stage, Status
from kpis import dirty

#: New deals replayed before they are written: one id reservation and one COPY (or a few
#: INSERTs) per table each; memory stays bounded on a file of any size.
CHUNK_DEALS = 2_000

# Plain strings: rows hold database values, not enum members.
LEAD, OFFER, NEGOTIATION, CLOSING = (
    Stage.LEAD.value,
    Stage.OFFER.value,
    Stage.NEGOTIATION.value,
    Stage.CLOSING.value,
)
OPEN, WON, LOST = Status.OPEN.value, Status.WON.value, Status.LOST.value
CREATED, MOVED, SKIPPED, LOST_EVENT, WON_EVENT = (
    StageEvent.CREATED.value,
    StageEvent.MOVED.value,
    StageEvent.SKIPPED.value,
    StageEvent.LOST.value,
    StageEvent.WON.value,
)
DRAFT, SENT, ACCEPTED, REJECTED = (
    OfferStatus.DRAFT.value,
    OfferStatus.SENT.value,
    OfferStatus.ACCEPTED.value,
    OfferStatus.REJECTED.value,
)
CONTRACT = "contract"
INDEX = {stage.value: stages.index(stage) for stage in stages.ORDER}
STAMP_OF = {stage.value: stages.stamp_field(stage) for stage in stages.ORDER}
#: (from, to): the stages a forward move enters, the skipped ones first
PATHS = {
    (a.value, b.value): (*(s.value for s in stages.between(a, b)), b.value)
    for a in stages.ORDER
    for b in stages.ORDER
    if stages.is_forward(a, b)
}

DEAL_COLUMNS = model_columns(Deal, with_id=True)
#: (model, columns), in the order the tables are written (deals first: the others
#: refer to them).
TABLES = (
    (Deal, DEAL_COLUMNS),
    (StageHistory, HISTORY_COLUMNS),
    (Offer, OFFER_COLUMNS),
    (NegotiationRound, ROUND_COLUMNS),
    (ClosingDocument, DOCUMENT_COLUMNS),
    (DealChange, CHANGE_COLUMNS),
)
#: The qualification answers and the expected close date: details of the deal a row
#: sets as they are when it creates the deal, whatever stage it reached (columns of
#: the same names; both paths pass them to the deal's creation).
DETAIL_FIELDS = (
    "heard_from",
    "contact_prompt",
    "product_scope",
    "qualification_score",
    "expected_close_date",
)
#: Deal fields a row sets from its cells: validated as ``Deal.full_clean`` would.
ROW_FIELDS = (
    "title",
    "external_id",
    "currency",
    "estimated_value",
    "industry",
    "segment",
    *DETAIL_FIELDS,
)


class BulkWriteError(RuntimeError):
    """Writing a chunk failed (another session took an external id meanwhile, say):
    the whole import is rolled back."""


class Refused(Exception):
    """A domain function would refuse this row: the domain path says how."""


class _Rates:
    """``funnel.money.to_base`` with every rate of the file's currencies read once."""

    def __init__(self):
        self.base = base_currency()
        self.tables = {}

    def to_base(self, amount, currency, on):
        if amount is None:
            return None
        if currency == self.base:
            return quantize(amount)
        table = self.tables.get(currency)
        if table is None:
            pairs = list(
                ExchangeRate.objects.filter(currency=currency)
                .order_by("date")
                .values_list("date", "rate")
            )
            table = self.tables[currency] = ([d for d, _ in pairs], [r for _, r in pairs])
        dates, rates = table
        i = bisect.bisect_right(dates, local_date(on)) - 1
        if i < 0:
            raise Refused  # the domain names the missing rate
        return quantize(amount * rates[i])


class _Writer:
    """Rows into tables: ``COPY`` on PostgreSQL, ``bulk_create`` elsewhere. Deal ids are
    reserved first, so the other rows can refer to them."""

    def __init__(self):
        self.postgres = connection.vendor == "postgresql"

    def reserve_ids(self, model, count):
        if not count:
            return []
        if self.postgres:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                    [model._meta.db_table, model._meta.pk.column, count],
                )
                return [row[0] for row in cursor.fetchall()]
        # SQLite: the import's transaction holds the database's write lock (the settings
        # begin transactions IMMEDIATE), so nobody else takes these ids meanwhile.
        start = (model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1
        return range(start, start + count)

    def insert(self, model, columns, rows):
        if rows:
            insert_rows(model, columns, rows)


class BulkDeals:
    """New deals of one import, replayed in memory and written a chunk at a time.

    ``take`` accepts a row (or returns False: the domain path must run it, after
    ``flush``); ``flush`` writes what was taken; ``finish`` writes the rest and marks
    the KPI days the deals feed, as the domain functions would have."""

    def __init__(self, *, by, lookups):
        check_columns(TABLES, "The bulk import")
        self.by_id = by.pk if by is not None else None
        self.lookups = lookups
        self.rates = _Rates()
        self.writer = _Writer()
        self.defaults = {f.attname: plain(f.get_default()) for f in Deal._meta.concrete_fields}
        self.fields = {name: Deal._meta.get_field(name) for name in ROW_FIELDS}
        self._clear()

    def _clear(self):
        self.deals = []  # replayed deals: (deal dict, history, offer, rounds, document, changes)
        self.new_companies = []
        self.filled_companies = {}

    @property
    def pending(self):
        return bool(self.deals or self.new_companies or self.filled_companies)

    # Rows.

    def take(self, row, plan):
        """Replay ``row`` in memory; False if the domain path must run it instead.
        Raises RowError for what the domain path would refuse before writing anything
        (unknown owner, channel or lost reason)."""
        refs = self._references(row)
        if refs is None:
            return False
        company, new_company, filled = self._company(row)
        if company is None:
            return False
        try:
            replayed = self._replay(row, plan, refs, company)
        except (Refused, ValidationError):
            return False
        lookups = self.lookups
        if new_company:
            lookups.companies[row["company"].casefold()] = company
            lookups.pending["companies"].append(company.name)
            self.new_companies.append(company)
        elif filled:
            for name, value in filled.items():
                setattr(company, name, value)
            if company.pk is not None:
                self.filled_companies.setdefault(company.pk, [company, set()])[1].update(filled)
        self.deals.append(replayed)
        if len(self.deals) >= CHUNK_DEALS:
            self.flush()
        return True

    def _references(self, row):
        from funnel.importing import MISSING, RowError

        lookups = self.lookups
        found, errors, missing = {}, [], False
        for name, value, find in (
            ("owner", row["owner"], lookups.find_owner),
            ("channel", row["channel"], lookups.find_channel),
            ("reason", row["lost_reason"], lookups.find_reason),
        ):
            try:
                found[name] = find(value) if value else None
            except RowError as exc:
                errors += exc.messages
                continue
            missing = missing or found[name] is MISSING
        if errors:
            raise RowError(*errors)
        return None if missing else found

    def _company(self, row):
        """(company, is it new, {field: value} it fills in); (None, ...) if the domain
        path must look at it."""
        from funnel.importing import company_fill_in

        name, industry, segment = row["company"], row["industry"], row["segment"]
        company = self.lookups.find_company(name)
        try:
            if company is None:
                company = Company(name=name, industry=industry, segment=segment)
                # No company has this name, whatever its case: it is unique.
                company.full_clean(validate_unique=False)
                return company, True, {}
            filled = {"industry": industry, "segment": segment}
            filled = {f: filled[f] for f in company_fill_in(company, **filled)}
            for f, value in filled.items():
                Company._meta.get_field(f).clean(value, company)
        except ValidationError:
            return None, False, {}
        return company, False, filled

    def _replay(self, row, plan, refs, company):
        """The rows ``importing._DealImporter._replay`` would write, from the same calls
        in the same order, each checked as its domain function checks it."""
        return _Replay(self, row, plan, refs, company).run()

    # Writing.

    def flush(self):
        """Write every deal taken so far (and the companies they create or fill in)."""
        try:
            self._flush()
        except DatabaseError as exc:
            # Not one row's failure: the import's transaction is lost, so it must end.
            raise BulkWriteError(f"The database refused the imported deals: {exc}") from exc

    def _flush(self):
        if self.new_companies:
            Company.objects.bulk_create(self.new_companies, batch_size=INSERT_BATCH_SIZE)
            if any(c.pk is None for c in self.new_companies):
                raise RuntimeError("The database did not return the new companies' ids.")
        for fields in {frozenset(f) for _, f in self.filled_companies.values()}:
            Company.objects.bulk_update(
                [c for c, f in self.filled_companies.values() if frozenset(f) == fields],
                sorted(fields),
                batch_size=INSERT_BATCH_SIZE,
            )
        deals = self.deals
        self._clear()
        if not deals:
            return
        ids = self.writer.reserve_ids(Deal, len(deals))
        tables = {model: [] for model, _ in TABLES}
        moments, earliest = set(), None
        for deal_id, (d, history, offer, rounds, document, changes) in zip(ids, deals, strict=True):
            d["id"] = deal_id
            d["company_id"] = d.pop("company").pk
            # The latest stage-history moment, as the domain functions keep it.
            d["stage_changed_at"] = max(h[3] for h in history)
            tables[Deal].append(tuple(d[c] for c in DEAL_COLUMNS))
            tables[StageHistory] += [(deal_id, *h) for h in history]
            tables[NegotiationRound] += [(deal_id, *r) for r in rounds]
            tables[DealChange] += [(deal_id, *c) for c in changes]
            if offer is not None:
                offer["deal_id"] = deal_id
                tables[Offer].append(tuple(offer[c] for c in OFFER_COLUMNS))
                moments.update((offer["sent_at"], offer["responded_at"]))
            if document is not None:
                document["deal_id"] = deal_id
                tables[ClosingDocument].append(tuple(document[c] for c in DOCUMENT_COLUMNS))
            # kpis.dirty.deal_days: every stamp and outcome, the offer's sending and
            # response, the expected close date, every day from the latest event, which
            # for the first mark of a deal (its creation) is its lead moment: the days
            # it was open in count it among open deals and its owner among active reps.
            moments.update(d[f] for f in STAMP_FIELDS)
            moments.update((d["won_at"], d["lost_at"], d["expected_close_date"]))
            created = d["entered_lead_at"]
            earliest = created if earliest is None or created < earliest else earliest
        for model, columns in TABLES:
            self.writer.insert(model, columns, tables[model])
        moments.discard(None)
        dirty.mark_days([*moments, *dirty.days_since(earliest)])

    def finish(self, *, write=True):
        """Write the rest (``write``), or drop it when the import is rolled back."""
        if write:
            self.flush()
        else:
            self._clear()


# The row rules both paths share (importing._replay and _Replay).


def answered_at(row, status):
    """When the client answered an offer of a deal that did not go past ``offer`` (the
    others answered on entering negotiation, or closing when it was skipped): the loss,
    for a deal lost at ``offer``; else the file gives no moment and the sending is taken
    (docs/kpis.md, "Imported history")."""
    if status == LOST and row["lost_at"] is not None:
        return row["lost_at"]
    return row["offer_sent_at"]


def agreed_terms(row, agreed_value):
    """(agreed value, discount) a row agrees: its agreed_value, or else the value its
    accepted offer agreed (``agreed_value``), with its discount_pct."""
    value = row["agreed_value"]
    if value is None and row["offer_status"] == ACCEPTED:
        value = agreed_value
    return value, row["discount_pct"]


class _Replay:
    """One row's transitions in memory. Each method does what the domain function of
    the same name does, checks included; a check that fails raises Refused."""

    def __init__(self, bulk, row, plan, refs, company):
        self.bulk, self.row, self.plan, self.refs = bulk, row, plan, refs
        self.company = company
        self.now = timezone.now()
        self.by = bulk.by_id
        self.offer = None
        self.rounds, self.document, self.changes, self.history = [], None, [], []

    def to_base(self, amount, on):
        return self.bulk.rates.to_base(amount, self.d["currency"], on)

    def moment(self, at):
        # domain._moment: never in the future (the file's moments all carry a zone).
        if at > self.now:
            raise Refused
        return at

    def not_before(self, at):
        if at < self.d["last_event_at"]:
            raise Refused

    def log_changes(self, before, current, fields, at):
        """The change-log rows ``domain.changed`` finds (``current``: a dict)."""
        for name, old, new in domain.changed(before, current.__getitem__, fields):
            self.changes.append((name, old, new, at, self.by, self.now))

    def current_value(self):
        d = self.d
        if d["status"] == WON:
            return self.document["final_value_base"]
        if d["agreed_value_base"] is not None:
            return d["agreed_value_base"]
        if self.offer is not None and self.offer["sent_at"] is not None:
            return self.offer["value_base"]
        return d["estimated_value_base"]

    def run(self):
        row, plan = self.row, self.plan
        self.create_deal()
        self.responded = self.agreed = False
        for target, moment in plan.moves:
            target = target.value
            offer = self.offer
            after_offer = INDEX[target] >= INDEX[NEGOTIATION]
            if after_offer and offer and offer["sent_at"] and not self.responded:
                self.respond(moment)
            if target == CLOSING:
                self.agree(moment)
            self.move_forward(target, moment)
            if target == OFFER and row["offer_value"] is not None:
                self.start_offer(row["offer_value"], moment)
                if row["offer_sent_at"]:
                    self.send_offer(row["offer_sent_at"])
            if target == NEGOTIATION:
                proposed = next(
                    (
                        row[c]
                        for c in ("agreed_value", "offer_value", "estimated_value")
                        if row[c] is not None
                    ),
                    None,
                )
                for _ in range(row["negotiation_rounds"] or 0):
                    self.add_round(moment, proposed, row["discount_pct"] or 0)
            if target == CLOSING and row["document_type"]:
                self.save_closing_document(moment)
        status = row["status"] or Status.OPEN
        if self.offer and self.offer["sent_at"] and not self.responded:
            self.respond(answered_at(row, status))
        if not self.agreed and agreed_terms(row, self.d["agreed_value"])[0] is not None:
            self.agree(self.d["last_event_at"])
        if status == WON:
            self.win(row["won_at"])
        elif status == LOST:
            self.mark_lost(row["lost_at"])
        return self.d, self.history, self.offer, self.rounds, self.document, self.changes

    def create_deal(self):
        row, refs, bulk = self.row, self.refs, self.bulk
        at = self.moment(row["lead_at"])
        first_touch_at = row["first_touch_at"]
        if first_touch_at is not None and self.moment(first_touch_at) > at:
            raise Refused
        d = self.d = dict(bulk.defaults)
        d.update(
            title=row["title"] or self.company.name,
            company=self.company,  # its id once written (flush)
            channel_id=refs["channel"].pk if refs["channel"] else None,
            owner_id=refs["owner"].pk,
            created_by_id=self.by,
            external_id=row["external_id"] or None,
            currency=row["currency"] or bulk.rates.base,
            estimated_value=cents(row["estimated_value"]),
            first_touch_at=first_touch_at,
            industry=row["industry"],
            segment=row["segment"],
            **{name: row[name] for name in DETAIL_FIELDS},
            entered_lead_at=at,
            last_event_at=at,
            stage=LEAD,
            status=OPEN,
            updated_at=self.now,
        )
        for name, field in bulk.fields.items():
            # Deal.full_clean: the fields the row sets (the others hold their defaults).
            if d[name] is None or d[name] == "":
                if not field.blank:
                    raise Refused
                continue
            field.clean(d[name], None)
        d["estimated_value_base"] = self.to_base(d["estimated_value"], at)
        d["current_value_base"] = d["estimated_value_base"]
        self.history.append((CREATED, None, LEAD, at, self.by, None, "", self.now))

    def move_forward(self, target, at):
        d = self.d
        at = self.moment(at)
        if d["status"] != OPEN or INDEX[target] <= INDEX[d["stage"]]:
            raise Refused
        self.not_before(at)
        if at <= d[STAMP_OF[d["stage"]]] and not (
            d["stage"] == LEAD and at == d["entered_lead_at"]
        ):
            raise Refused
        offer = self.offer
        if INDEX[target] >= INDEX[NEGOTIATION] and not (
            offer is not None and offer["sent_at"] is not None and offer["sent_at"] <= at
        ):
            raise Refused
        if target == CLOSING and d["agreed_value"] is None:
            raise Refused
        previous = d["stage"]
        for stage in PATHS[previous, target]:
            d[STAMP_OF[stage]] = at
            event = MOVED if stage == target else SKIPPED
            self.history.append((event, previous, stage, at, self.by, None, "", self.now))
            previous = stage
        d["stage"] = target
        d["last_event_at"] = at
        d["version"] += 1

    def start_offer(self, value, at):
        d = self.d
        at = self.moment(at)
        if d["status"] != OPEN or INDEX[d["stage"]] < INDEX[OFFER] or self.offer is not None:
            raise Refused
        value = cents(value)
        if value is None or at < d["entered_offer_at"]:
            raise Refused
        self.offer = {
            "version": 1,
            "value": value,
            "value_base": self.to_base(value, at),
            "prep_started_at": at,
            "sent_at": None,
            "responded_at": None,
            "status": DRAFT,
            "notes": "",
            "created_by_id": self.by,
            "sent_by_id": None,
            "responded_by_id": None,
        }

    def send_offer(self, at):
        offer = self.offer
        at = self.moment(at)
        if self.d["status"] != OPEN or offer["status"] != DRAFT or at < offer["prep_started_at"]:
            raise Refused
        offer["sent_at"] = at
        offer["sent_by_id"] = self.by
        offer["status"] = SENT
        offer["value_base"] = self.to_base(offer["value"], at)
        self.d["current_value_base"] = self.current_value()

    def respond(self, at):
        """importing's ``respond``: the client's answer, if the row gives one."""
        self.responded = True
        status = self.row["offer_status"]
        if status not in (ACCEPTED, REJECTED):
            return
        offer, d = self.offer, self.d
        at = self.moment(at)
        if d["status"] != OPEN or offer["status"] != SENT or at < offer["sent_at"]:
            raise Refused
        offer["status"] = status
        offer["responded_at"] = at
        offer["responded_by_id"] = self.by
        if status == ACCEPTED and d["agreed_value"] is None and INDEX[d["stage"]] >= INDEX[OFFER]:
            self.agree_terms(offer["value"], None, at)

    def agree(self, at):
        """importing's ``agree``: the row's terms, unless the accepted offer set them."""
        self.agreed = True
        value, discount = agreed_terms(self.row, self.d["agreed_value"])
        if value is None or (self.d["agreed_value"] == value and discount is None):
            return
        self.agree_terms(value, discount, at)

    def agree_terms(self, value, discount, at):
        d = self.d
        at = self.moment(at)
        if d["status"] != OPEN or INDEX[d["stage"]] < INDEX[OFFER]:
            raise Refused
        self.not_before(at)
        before = {"agreed_value": d["agreed_value"], "discount_pct": d["discount_pct"]}
        d["agreed_value"] = cents(value)
        if d["agreed_value"] is None:
            raise Refused
        if discount is not None:
            d["discount_pct"] = cents(discount)
        d["agreed_value_base"] = self.to_base(d["agreed_value"], at)
        d["agreed_at"] = d["last_event_at"] = at
        d["current_value_base"] = self.current_value()
        d["version"] += 1
        self.log_changes(before, d, domain.TRACKED_FIELDS, at)

    def add_round(self, held_at, proposed, discount):
        d = self.d
        if d["status"] != OPEN or d["stage"] != NEGOTIATION:
            raise Refused
        held_at = self.moment(held_at)
        proposed = cents(proposed)
        if held_at < d["entered_negotiation_at"] or proposed is None:
            raise Refused
        self.rounds.append(
            (
                len(self.rounds) + 1,
                held_at,
                proposed,
                self.to_base(proposed, held_at),
                cents(Decimal(discount or 0)),
                "",
                self.by,
            )
        )

    def save_closing_document(self, moment):
        d, row = self.d, self.row
        if d["status"] != OPEN or d["stage"] != CLOSING or self.document is not None:
            raise Refused
        final_value = cents(row["final_value"])
        issue_date = local_date(moment)
        if (
            final_value is None
            or issue_date > timezone.localdate()
            or issue_date < local_date(d["entered_closing_at"])
        ):
            raise Refused
        self.document = {
            "document_type": row["document_type"],
            "issue_date": issue_date,
            "number": "",
            "final_value": final_value,
            "final_value_base": self.to_base(final_value, issue_date),
            "signed_at": None,
            "paid_at": None,
        }
        # A new document (number left blank), dated with the wall clock as the domain
        # dates it (it takes no moment).
        self.log_changes(
            domain.NO_DOCUMENT, self.document, domain.DOCUMENT_TRACKED_FIELDS, self.now
        )
        d["version"] += 1

    def win(self, at):
        d, document = self.d, self.document
        at = self.moment(at)
        if d["status"] != OPEN or d["stage"] != CLOSING or document is None:
            raise Refused
        self.not_before(at)
        if local_date(at) < document["issue_date"]:
            raise Refused
        closed_by = "signed_at" if document["document_type"] == CONTRACT else "paid_at"
        document[closed_by] = at
        document["final_value_base"] = self.to_base(document["final_value"], at)
        d.update(
            status=WON, won_at=at, last_event_at=at, current_value_base=document["final_value_base"]
        )
        d["version"] += 1
        self.history.append((WON_EVENT, d["stage"], d["stage"], at, self.by, None, "", self.now))
        self.log_changes({closed_by: None}, document, [closed_by], at)

    def mark_lost(self, at):
        d, reason = self.d, self.refs["reason"]
        at = self.moment(at)
        if d["status"] != OPEN or reason is None:
            raise Refused
        self.not_before(at)
        d.update(
            status=LOST,
            lost_at=at,
            lost_reason_id=reason.pk,
            lost_stage=d["stage"],
            lost_note="",
            last_event_at=at,
        )
        d["version"] += 1
        stage = d["stage"]
        self.history.append((LOST_EVENT, stage, stage, at, self.by, reason.pk, "", self.now))
