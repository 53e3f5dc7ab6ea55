"""The demo year: a deterministic, plausible year of funnel activity (``seed_demo``).

One plan generator, :class:`DemoPlan`, describes the year: the cast, the channels and
their monthly spend, sales costs, EUR rates, companies and contacts, and for every deal
the steps a sales team would have clicked through (create, move forward, offers, rounds,
terms, closing document, win or loss, reopen, activities), each with its moment. Two
executors turn the plan into rows:

- :class:`DomainExecutor` calls the functions in ``funnel/domain.py`` one step at a
  time: the reference path, a handful of queries per step;
- :class:`BulkExecutor` replays the same steps in memory, writing exactly the rows those
  functions would write, and inserts them in chunks (``COPY`` on PostgreSQL,
  ``bulk_create`` elsewhere): the path for volume, used by default.

``tests/funnel/test_seed_demo.py`` proves that both executors write the same rows.

The same seed and ``until`` give the same data. The year ends at the start of ``until``
(a date, in the organisation's time zone), so every moment lies in the past; deals
whose story runs past that moment are cut there and stay open.
"""

import bisect
import calendar
import contextlib
import datetime
import itertools
import operator
import random
import time
from array import array
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple

from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from accounts.models import Role, Team, User
from funnel import domain, stages
from funnel.bulk import (
    ACTIVITY_COLUMNS,
    CHANGE_COLUMNS,
    DOCUMENT_COLUMNS,
    HISTORY_COLUMNS,
    INSERT_BATCH_SIZE,
    OFFER_COLUMNS,
    ROUND_COLUMNS,
    cents,
    check_columns,
    model_columns,
    plain,
)
from funnel.models import (
    Activity,
    Channel,
    ClosingDocument,
    Company,
    Contact,
    Deal,
    DealChange,
    DocumentType,
    ExchangeRate,
    LostReason,
    MarketingSpend,
    NegotiationRound,
    Offer,
    OfferStatus,
    SalesCost,
    StageEvent,
    StageHistory,
)
from funnel.money import CENT, base_currency, local_date, quantize
from funnel.stages import STAMP_FIELDS, Status
from kpis.company import forget_inputs
from kpis.dirty import batched, days_since, mark_days
from kpis.models import Forecast, ForecastKind, Target
from kpis.periods import Grain, today

DEMO_PASSWORD = "lejek-demo"
DEFAULT_DEALS = 2_000
DEFAULT_SEED = 1

# Deals planned, replayed and written together by the bulk executor. A chunk holds
# about 15 rows per deal as tuples (~75,000 rows, a few tens of MB) and costs one id
# reservation and one COPY (or a series of INSERTs) per table; bigger chunks save
# little, smaller ones add round trips.
CHUNK_DEALS = 5_000

# Companies (and their contacts) generated and written together: bounded memory for
# the 200,000 companies of a million-deal year.
CHUNK_COMPANIES = 20_000

# Ids reserved from a PostgreSQL sequence per query: 100,000 rows of 8 bytes.
ID_BLOCK = 100_000

# From this many deals on, a PostgreSQL load sets the deal tables' secondary indexes and
# foreign keys aside and rebuilds them at the end: one sort per index and one join per
# key instead of a B-tree insertion and a trigger per row. Below it the rebuild (and the
# exclusive locks it takes) costs more than it saves.
SET_ASIDE_FROM_DEALS = 50_000

# Plain strings: rows hold database values, not enum members.
LEAD, QUALIFICATION, NEEDS, OFFER, NEGOTIATION, CLOSING = (s.value for s in stages.ORDER)
OPEN, WON, LOST = Status.OPEN.value, Status.WON.value, Status.LOST.value
CREATED, MOVED, SKIPPED, REOPENED, LOST_EVENT, WON_EVENT = (
    StageEvent.CREATED.value,
    StageEvent.MOVED.value,
    StageEvent.SKIPPED.value,
    StageEvent.REOPENED.value,
    StageEvent.LOST.value,
    StageEvent.WON.value,
)
DRAFT, SENT, ACCEPTED, REJECTED, SUPERSEDED = (
    OfferStatus.DRAFT.value,
    OfferStatus.SENT.value,
    OfferStatus.ACCEPTED.value,
    OfferStatus.REJECTED.value,
    OfferStatus.SUPERSEDED.value,
)
STAGE_INDEX = {stage.value: stages.index(stage) for stage in stages.ORDER}
STAMP_OF = {stage.value: stages.stamp_field(stage) for stage in stages.ORDER}
#: (from, to): the stages a forward move enters, the skipped ones first
PATHS = {
    (a.value, b.value): (*(s.value for s in stages.between(a, b)), b.value)
    for a in stages.ORDER
    for b in stages.ORDER
    if stages.is_forward(a, b)
}
CONTRACT, PROFORMA = DocumentType.CONTRACT.value, DocumentType.PROFORMA.value
FOREIGN_CURRENCY = "EUR"
#: Won value a month brings at the default volume once the funnel is full (measured
#: on the default demo year: 2.0 to 3.5 million a month from its fourth month on).
MONTHLY_REVENUE = 2_500_000
#: Targets grow to their full size over the first months: the year starts with an
#: empty funnel.
TARGET_RAMP_MONTHS = 4
MAX_DISCOUNT = Decimal("25.00")


class Weighted:
    """Entries drawn in proportion to their weights (each entry's second item)."""

    def __init__(self, *entries):
        self.entries = entries
        self.cumulative = list(itertools.accumulate(entry[1] for entry in entries))

    def at_share(self, share):
        """The entry found at ``share`` (0 to 1) of the total weight."""
        return self.entries[bisect.bisect_right(self.cumulative, share * self.cumulative[-1])]

    def pick(self, rng):
        return self.at_share(rng.random())


# The cast -----------------------------------------------------------------------------

#: username, first name, last name, role, team
CAST = (
    ("admin", "Agnieszka", "Mazur", Role.ADMIN, None),
    ("anna.manager", "Anna", "Nowak", Role.MANAGER, "Północ"),
    ("piotr.manager", "Piotr", "Wiśniewski", Role.MANAGER, "Południe"),
    ("ewa.rep", "Ewa", "Kowalska", Role.REP, "Północ"),
    ("jan.rep", "Jan", "Zieliński", Role.REP, "Północ"),
    ("kasia.rep", "Katarzyna", "Wójcik", Role.REP, "Północ"),
    ("marek.rep", "Marek", "Kamiński", Role.REP, "Południe"),
    ("ola.rep", "Aleksandra", "Lewandowska", Role.REP, "Południe"),
    ("tomek.rep", "Tomasz", "Dąbrowski", Role.REP, "Południe"),
)
#: team name, its manager
TEAMS = (("Północ", "anna.manager"), ("Południe", "piotr.manager"))
MANAGER_OF = {name: dict(TEAMS)[team] for name, _, _, role, team in CAST if role == Role.REP}
#: the share of new leads each rep takes
REP_WEIGHTS = {
    "ewa.rep": 12,
    "jan.rep": 10,
    "kasia.rep": 9,
    "marek.rep": 11,
    "ola.rep": 10,
    "tomek.rep": 8,
}


class ChannelProfile(NamedTuple):
    name: str
    weight: int  # share of leads
    inbound: bool  # the client came to us: some skip qualification
    spend: int  # typical monthly spend in PLN for the default volume
    touch_days: int  # the first marketing touch precedes the lead by up to this
    heard_from: tuple[str, ...]


CHANNELS = (
    ChannelProfile("Google Ads", 25, False, 18_000, 14, ("Wyszukiwarka Google", "Reklama Google")),
    ChannelProfile("LinkedIn", 17, False, 11_000, 30, ("Post na LinkedIn", "Reklama na LinkedIn")),
    ChannelProfile("Strona WWW", 16, True, 3_000, 21, ("Strona internetowa", "Blog firmowy")),
    ChannelProfile(
        "Outbound", 14, False, 7_000, 60, ("Telefon od handlowca", "E-mail od handlowca")
    ),
    ChannelProfile("Webinary", 10, False, 4_500, 45, ("Webinar", "Nagranie webinaru")),
    ChannelProfile("Targi", 9, False, 1_500, 90, ("Stoisko na targach", "Prelekcja na targach")),
    ChannelProfile("Polecenia", 9, True, 2_000, 30, ("Polecenie klienta", "Polecenie partnera")),
)
#: trade fairs: the months with a fair cost far more than the rest
FAIR_SPEND = {3: 60_000, 5: 35_000, 10: 65_000}

INDUSTRIES = (
    ("Produkcja", 24),
    ("IT", 16),
    ("Logistyka", 14),
    ("Handel", 16),
    ("Ochrona zdrowia", 9),
    ("Budownictwo", 12),
    ("Finanse", 9),
)


class SegmentProfile(NamedTuple):
    name: str
    weight: int
    median_value: int  # PLN
    foreign_share: float  # share of deals in EUR


SEGMENTS = (
    SegmentProfile("SMB", 55, 18_000, 0.03),
    SegmentProfile("Mid-market", 32, 80_000, 0.08),
    SegmentProfile("Enterprise", 13, 350_000, 0.20),
)

PRODUCTS = (
    "Licencje CRM",
    "Wdrożenie ERP",
    "Integracja systemów",
    "Automatyzacja magazynu",
    "Platforma B2B",
    "Szkolenia zespołu",
    "Opieka serwisowa",
    "Audyt IT",
)
PROMPTS = (
    "Rozbudowa firmy",
    "Nowa inwestycja",
    "Problem z obecnym dostawcą",
    "Zmiana przepisów",
    "Koniec umowy z dostawcą",
    "Cięcie kosztów",
    "Nowy zarząd",
)
PROBLEMS = (
    "Ręczne raportowanie zajmuje kilka dni w miesiącu.",
    "Dane rozproszone w arkuszach i skrzynkach pocztowych.",
    "Brak kontroli nad stanami magazynowymi.",
    "Długi czas obsługi zamówienia.",
    "Przestarzały system bez wsparcia producenta.",
    "Zespół nie wie, które szanse sprzedaży są realne.",
)
OUTCOMES = (
    "Raporty dostępne od ręki.",
    "Jedno źródło danych dla całej firmy.",
    "Obsługa zamówienia o połowę krótsza.",
    "Niższe koszty utrzymania systemów.",
    "Zgodność z nowymi przepisami.",
    "Przewidywalna sprzedaż kwartał do przodu.",
)

#: (kind, weight, outcomes) of the meetings, audits, calls and e-mails of needs analysis
NEEDS_ACTIVITIES = Weighted(
    ("meeting", 35, ("Zebrane wymagania", "Prezentacja rozwiązania", "Spotkanie z zarządem")),
    ("call", 35, ("Umówione spotkanie", "Klient prosi o materiały", "Doprecyzowany zakres")),
    ("audit", 10, ("Audyt procesów zakończony", "Raport z audytu przekazany")),
    ("email", 20, ("Wysłane materiały", "Podsumowanie spotkania")),
)
FOLLOW_UP = Weighted(("call", 1, ("Klient analizuje ofertę", "Pytania do oferty")))

#: (lost reason code, weight, notes) by the stage the deal is lost at
LEAD_LOSSES = Weighted(
    ("no_response", 70, ("", "Brak kontaktu po trzech próbach")),
    ("timing", 30, ("", "Wrócą do tematu w przyszłym roku")),
)
QUALIFICATION_LOSSES = Weighted(
    ("no_budget", 45, ("", "Brak budżetu w tym roku")),
    ("timing", 35, ("", "Projekt przesunięty")),
    ("no_response", 20, ("",)),
)
NEEDS_LOSSES = Weighted(
    ("no_budget", 35, ("", "Budżet przesunięty na inne projekty")),
    ("no_decision", 30, ("", "Zarząd nie podjął decyzji")),
    ("timing", 20, ("", "Wrócą po zakończeniu sezonu")),
    ("competitor", 15, ("", "Rozmawiają już z innym dostawcą")),
)
OFFER_LOSSES = Weighted(
    ("price", 45, ("", "Oferta powyżej budżetu klienta")),
    ("competitor", 35, ("", "Wybrali tańszą ofertę konkurencji")),
    ("no_response", 20, ("", "Brak odpowiedzi na ofertę")),
)
NEGOTIATION_LOSSES = Weighted(
    ("price", 45, ("", "Nie zeszliśmy do oczekiwanej ceny")),
    ("competitor", 35, ("", "Konkurencja dała większy rabat")),
    ("no_decision", 20, ("", "Zarząd wstrzymał zakup")),
)
CLOSING_LOSSES = Weighted(
    ("no_decision", 50, ("", "Umowa nie została podpisana")),
    ("timing", 25, ("", "Zakup przesunięty na kolejny rok")),
    ("other", 25, ("", "Zmiana właściciela firmy")),
)
#: how many negotiation rounds
ROUNDS = Weighted((0, 10), (1, 30), (2, 30), (3, 20), (4, 10))
DISQUALIFY_NOTES = ("", "Poza grupą docelową", "Zbyt mała firma", "Szuka innego produktu")

# Step actions: the names of the domain functions that carry them out.
CREATE = "create_deal"
MOVE = "move_forward"
START_OFFER = "start_offer"
SEND_OFFER = "send_offer"
ACCEPT_OFFER = "accept_offer"
REJECT_OFFER = "reject_offer"
ADD_ROUND = "add_round"
AGREE_TERMS = "agree_terms"
SAVE_DOCUMENT = "save_closing_document"
WIN = "win"
MARK_LOST = "mark_lost"
DISQUALIFY = "disqualify"
REOPEN = "reopen"
LOG_ACTIVITY = "log_activity"

# Names -------------------------------------------------------------------------------

COMPANY_PREFIXES = (
    "Pol", "Tech", "Inter", "Euro", "Agro", "Bud", "Trans", "Med", "Stal", "Elektro",
    "Info", "Prim", "Nova", "Mega", "Silesia", "Mazovia", "Baltic", "Vistula", "Karpat", "Orion",
)  # fmt: skip
COMPANY_SUFFIXES = (
    "mex", "pol", "bud", "tech", "trans", "sys", "med", "plast", "net", "soft",
    "chem", "log", "stal", "dom", "tex", "form", "met", "gaz", "lab", "serwis",
)  # fmt: skip
LEGAL_FORMS = Weighted(("sp. z o.o.", 60), ("S.A.", 15), ("sp.j.", 15), ("sp.k.", 10))
FIRST_NAMES_F = (
    "Anna", "Maria", "Katarzyna", "Małgorzata", "Agnieszka", "Barbara", "Ewa", "Magdalena",
    "Joanna", "Monika", "Dorota", "Karolina", "Natalia", "Paulina", "Zofia", "Marta",
)  # fmt: skip
FIRST_NAMES_M = (
    "Piotr", "Krzysztof", "Andrzej", "Tomasz", "Paweł", "Michał", "Marcin", "Jakub",
    "Adam", "Łukasz", "Grzegorz", "Mateusz", "Wojciech", "Rafał", "Kamil", "Marek",
)  # fmt: skip
LAST_NAMES = (
    "Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski",
    "Zieliński", "Szymański", "Woźniak", "Dąbrowski", "Kozłowski", "Jankowski", "Mazur",
    "Kwiatkowski", "Krawczyk", "Piotrowski", "Grabowski", "Nowakowski", "Pawłowski",
    "Michalski", "Król", "Wieczorek", "Jabłoński", "Wróbel", "Majewski", "Olszewski",
)  # fmt: skip
POSITIONS = (
    "Prezes zarządu",
    "Dyrektor operacyjny",
    "Dyrektor finansowy",
    "Kierownik IT",
    "Kierownik zakupów",
    "Dyrektor sprzedaży",
    "Kierownik logistyki",
)
_ASCII = str.maketrans("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ", "acelnoszzACELNOSZZ")
_NIP_WEIGHTS = (6, 5, 7, 2, 3, 4, 5, 6, 7)

#: Polish public holidays on fixed dates: nobody moves deals on them
HOLIDAYS = frozenset({(1, 1), (1, 6), (5, 1), (5, 3), (8, 15), (11, 1), (11, 11), (12, 24), (12, 25), (12, 26)})  # fmt: skip
#: how many leads each month brings, relative to an average month
MONTH_WEIGHTS = (0, 0.9, 1.0, 1.15, 1.1, 1.1, 1.0, 0.8, 0.7, 1.1, 1.2, 1.15, 0.8)
ONE_DAY = datetime.timedelta(days=1)
DAYS = [datetime.timedelta(days=n) for n in range(366)]  # later() waits weeks at most


def _feminine(last_name):
    for masculine, feminine in (("ski", "ska"), ("cki", "cka"), ("dzki", "dzka")):
        if last_name.endswith(masculine):
            return last_name[: -len(masculine)] + feminine
    return last_name


def _working(day):
    return day.weekday() < 5 and (day.month, day.day) not in HOLIDAYS


# random.randint() and choice() are several times slower than random() itself, and a
# million-deal year draws some thirty million numbers.


def _randint(rng, low, high):
    """A random integer from ``low`` to ``high``, both included."""
    return low + int(rng.random() * (high - low + 1))


def _choice(rng, options):
    return options[int(rng.random() * len(options))]


def _tax_id(rng):
    """A valid Polish NIP: nine digits and their check digit (never 10)."""
    while True:
        digits = [_randint(rng, 1 if i == 0 else 0, 9) for i in range(9)]
        check = sum(d * w for d, w in zip(digits, _NIP_WEIGHTS, strict=True)) % 11
        if check < 10:
            return "".join(map(str, digits)) + str(check)


def _round_money(amount, step):
    return Decimal(max(1, round(amount / step)) * step).quantize(CENT)


def _less(value, pct):
    """``value`` less ``pct`` per cent, to the cent."""
    return (value * (100 - pct) / 100).quantize(CENT, rounding=ROUND_HALF_UP)


def _half_percent(rng, low, high):
    """A discount from ``low`` to ``high`` per cent in steps of 0.5."""
    return (Decimal(_randint(rng, low * 2, high * 2)) / 2).quantize(CENT)


# The plan -----------------------------------------------------------------------------


class Step(NamedTuple):
    """One thing that happened to a deal: the domain function (``action``) that records
    it, its moment, who did it (a username) and the function's other arguments."""

    action: str
    at: datetime.datetime
    by: str
    args: dict


class DealPlan(NamedTuple):
    number: int  # 1-based, in order of lead creation
    steps: list[Step]  # steps[0] creates the deal; moments never decrease


class CompanyPlan(NamedTuple):
    name: str
    industry: str
    segment: str
    tax_id: str
    website: str
    created_at: datetime.datetime
    contacts: tuple  # (first name, last name, e-mail, phone, position)


class DemoPlan:
    """Everything ``seed_demo`` writes, generated from ``seed`` alone and anchored at
    ``until``. Each kind of data draws from its own random stream, so adding a channel
    does not change the deals, and deals are generated lazily, in lead-creation order."""

    def __init__(self, *, deals=DEFAULT_DEALS, seed=DEFAULT_SEED, until=None):
        self.deal_count = deals
        self.seed = seed
        self.tz = timezone.get_default_timezone()
        self.until = until or timezone.localdate()
        if self.until > timezone.localdate():
            raise ValueError("The demo year cannot end after today: its moments lie in the past.")
        #: the first moment after the demo year: the start of ``until``
        self.end = datetime.datetime.combine(self.until, datetime.time(), tzinfo=self.tz)
        self.start = self.end - datetime.timedelta(days=365)
        self.base_currency = base_currency()
        # EUR rates are only plausible against the zloty.
        self.foreign_currency = FOREIGN_CURRENCY if self.base_currency == "PLN" else None
        # Spend and commissions grow with the volume, so cost per lead stays plausible.
        self.cost_scale = max(deals, 100) / DEFAULT_DEALS
        self.company_count = max(40, deals // 5)
        rng = random.Random(f"{seed}:profiles")
        industries = Weighted(*((i, weight) for i, (_, weight) in enumerate(INDUSTRIES)))
        segments = Weighted(*((i, segment.weight) for i, segment in enumerate(SEGMENTS)))
        self.company_industry = bytes(industries.pick(rng)[0] for _ in range(self.company_count))
        self.company_segment = bytes(segments.pick(rng)[0] for _ in range(self.company_count))
        self.company_contacts = bytes(
            _choice(rng, (1, 1, 2, 2, 2, 3)) for _ in range(self.company_count)
        )
        stems = [p + s for p in COMPANY_PREFIXES for s in COMPANY_SUFFIXES if p.lower() != s]
        random.Random(f"{seed}:names").shuffle(stems)
        self._stems = stems
        self._working_days = {}

    # Reference data

    def months(self):
        """The first day of every calendar month the year touches."""
        month = self.start.date().replace(day=1)
        last = (self.end - ONE_DAY).date()
        while month <= last:
            yield month
            month = (month + datetime.timedelta(days=32)).replace(day=1)

    def company_name(self, index):
        # index * 37 % 100 walks through every share: legal forms by their weights
        legal_form = LEGAL_FORMS.at_share(index * 37 % 100 / 100)[0]
        return f"{self.company_stem(index)} {legal_form}"

    def company_stem(self, index):
        stem = self._stems[index % len(self._stems)]
        round_ = index // len(self._stems)
        return f"{stem} {round_ + 1}" if round_ else stem

    def companies(self):
        """Yield every company, in index order, with its contacts."""
        rng = random.Random(f"{self.seed}:companies")
        start = self.start.date()
        for index in range(self.company_count):
            stem = self.company_stem(index)
            slug = stem.lower().replace(" ", "")
            contacts = []
            for _ in range(self.company_contacts[index]):
                if rng.random() < 0.5:
                    first, last = _choice(rng, FIRST_NAMES_F), _feminine(_choice(rng, LAST_NAMES))
                else:
                    first, last = _choice(rng, FIRST_NAMES_M), _choice(rng, LAST_NAMES)
                email = f"{first}.{last}@{slug}.pl".lower().translate(_ASCII)
                phone = f"+48 {_randint(rng, 500, 799)} {_randint(rng, 0, 999):03d} {_randint(rng, 0, 999):03d}"
                contacts.append((first, last, email, phone, _choice(rng, POSITIONS)))
            created = start - datetime.timedelta(days=_randint(rng, 30, 1500))
            yield CompanyPlan(
                name=self.company_name(index),
                industry=INDUSTRIES[self.company_industry[index]][0],
                segment=SEGMENTS[self.company_segment[index]].name,
                tax_id=_tax_id(rng),
                website=f"https://www.{slug}.pl".translate(_ASCII),
                created_at=self._business_moment(created, rng),
                contacts=tuple(contacts),
            )

    def marketing_spend(self):
        """(channel name, month, amount in the base currency) for every channel and month."""
        rng = random.Random(f"{self.seed}:spend")
        rows = []
        for month in self.months():
            for channel in CHANNELS:
                typical = channel.spend
                if channel.name == "Targi":
                    typical = FAIR_SPEND.get(month.month, typical)
                amount = typical * self.cost_scale * rng.uniform(0.8, 1.2)
                rows.append((channel.name, month, _round_money(amount, 10)))
        return rows

    def sales_costs(self):
        """(month, team name or None, amount, note): salaries and commissions per team,
        tools for the whole company."""
        rng = random.Random(f"{self.seed}:costs")
        rows = []
        for month in self.months():
            for team, _ in TEAMS:
                salaries = 3 * 11_500 + 17_000 + rng.uniform(-1_500, 1_500)
                rows.append((month, team, _round_money(salaries, 10), "Wynagrodzenia"))
                commissions = rng.uniform(6_000, 18_000) * self.cost_scale
                rows.append((month, team, _round_money(commissions, 10), "Prowizje"))
            rows.append((month, None, _round_money(rng.uniform(2_800, 3_400), 10), "Narzędzia"))
        return rows

    def targets(self):
        """(month, team name or None, rep username or None, amount): every rep's monthly
        revenue target, a little above their share of what a month brings once the
        funnel is full (``MONTHLY_REVENUE``), lower in the first months while the year's
        first deals are still on their way; each team's target is the sum of its reps',
        the company's the sum of the teams'."""
        rng = random.Random(f"{self.seed}:targets")
        team_of = {username: team for username, _, _, _, team in CAST}
        weights = sum(REP_WEIGHTS.values())
        rows = []
        for i, month in enumerate(self.months()):
            ramp = min(1.0, (i + 1) / TARGET_RAMP_MONTHS)
            teams = dict.fromkeys((team for team, _ in TEAMS), Decimal(0))
            for username, weight in REP_WEIGHTS.items():
                share = MONTHLY_REVENUE * self.cost_scale * weight / weights
                amount = _round_money(share * ramp * rng.uniform(0.9, 1.25), 5_000)
                rows.append((month, None, username, amount))
                teams[team_of[username]] += amount
            rows += [(month, team, None, amount) for team, amount in teams.items()]
            rows.append((month, None, None, sum(teams.values())))
        return rows

    def forecasts(self, targets):
        """(month, team name or None, amount, entered at, entered by): the committed
        revenue forecast of the company (by the admin) and of each team (by its
        manager) for every month that begins inside the year, entered three days
        before it began, near the month's target (``targets``: ``self.targets()``)."""
        rng = random.Random(f"{self.seed}:forecasts")
        by = {None: "admin", **dict(TEAMS)}
        rows = []
        for month, team, rep, target in targets:
            start = datetime.datetime.combine(month, datetime.time(), tzinfo=self.tz)
            if rep is not None or start <= self.start:
                continue
            entered = start - datetime.timedelta(days=3) + datetime.timedelta(hours=16)
            amount = _round_money(float(target) * rng.uniform(0.8, 1.1), 10_000)
            rows.append((month, team, amount, entered, by[team]))
        return rows

    def exchange_rates(self):
        """(date, rate) of the foreign currency on every working day of the year, and
        a week before it, so every event has a rate on or before its date."""
        if not self.foreign_currency:
            return []
        rng = random.Random(f"{self.seed}:rates")
        rate, rows = 4.30, []
        day, last = self.start.date() - datetime.timedelta(days=7), (self.end - ONE_DAY).date()
        while day <= last:
            if _working(day):
                rate += rng.gauss(0, 0.012) + 0.05 * (4.30 - rate)
                rows.append((day, Decimal(f"{rate:.4f}")))
            day += ONE_DAY
        return rows

    # Deals

    def deals(self):
        """Yield a :class:`DealPlan` for every deal, in order of lead creation."""
        rng = random.Random(f"{self.seed}:deals")
        days, cumulative, total = [], [], 0.0
        day = self.start.date()
        while day < self.end.date():
            if _working(day):
                total += MONTH_WEIGHTS[day.month]
                days.append(day)
                cumulative.append(total)
            day += ONE_DAY
        reps = Weighted(*REP_WEIGHTS.items())
        channels = Weighted(*((channel, channel.weight) for channel in CHANNELS))
        for number in range(1, self.deal_count + 1):
            # Leads spread over the year by month weights, in order of creation.
            position = (number - 1 + rng.random()) / self.deal_count * total
            day = days[min(bisect.bisect_right(cumulative, position), len(days) - 1)]
            yield self._deal(rng, number, day, reps.pick(rng)[0], channels.pick(rng)[0])

    def _deal(self, rng, number, day, owner, channel):
        company = int(self.company_count * rng.random() ** 1.6)  # repeat customers
        segment = SEGMENTS[self.company_segment[company]]
        currency = self.base_currency
        rate = 1
        if self.foreign_currency and rng.random() < segment.foreign_share:
            currency, rate = self.foreign_currency, 4.3
        estimate = _round_money(segment.median_value * rng.lognormvariate(0, 0.5) / rate, 100)
        created = self._business_moment(day, rng)
        touched = day - datetime.timedelta(days=_randint(rng, 1, channel.touch_days))
        product = _choice(rng, PRODUCTS)
        story = _Story(self, rng, number, owner, created, estimate, channel.inbound)
        story.tell()
        steps = story.steps
        cut = next((i for i, step in enumerate(steps) if step.at >= self.end), len(steps))
        steps = steps[:cut]

        reached, concluded, entered_needs = 0, False, None
        for step in steps:
            if step.action == MOVE:
                reached = max(reached, STAGE_INDEX[step.args["stage"]])
                if entered_needs is None and reached >= STAGE_INDEX[NEEDS]:
                    entered_needs = step.at
            elif step.action == DISQUALIFY or (step.action == MARK_LOST and reached == 1):
                reached, concluded = max(reached, 1), True
        details = {
            # Firmographics and the product asked about are known from the first contact.
            "industry": INDUSTRIES[self.company_industry[company]][0],
            "segment": segment.name,
            "product_scope": product,
        }
        if reached >= 1:
            details["heard_from"] = _choice(rng, channel.heard_from)
            details["contact_prompt"] = _choice(rng, PROMPTS)
        if entered_needs is not None:
            details["qualification_score"] = _randint(rng, 55, 95)
            details["problems"] = _choice(rng, PROBLEMS)
            details["desired_outcomes"] = _choice(rng, OUTCOMES)
            details["expected_close_date"] = entered_needs.date() + datetime.timedelta(
                days=_randint(rng, 30, 100)
            )
        elif concluded:
            details["qualification_score"] = _randint(rng, 5, 45)
        create = Step(
            CREATE,
            created,
            owner,
            {
                "owner": owner,
                "company": company,
                "contact": _randint(rng, 0, self.company_contacts[company] - 1),
                "channel": channel.name,
                "title": f"{product}: {self.company_stem(company)}",
                "currency": currency,
                "estimated_value": estimate,
                "first_touch_at": self._business_moment(touched, rng),
                "external_id": f"demo-{number:07d}",
                "details": details,
            },
        )
        return DealPlan(number, [create, *steps])

    def _business_moment(self, day, rng):
        """A moment of ``day`` from 8:00 to 17:59."""
        hour, minute = divmod(480 + int(rng.random() * 600), 60)
        return datetime.datetime(day.year, day.month, day.day, hour, minute, tzinfo=self.tz)

    def later(self, moment, rng, low, high):
        """A business-hours moment ``low`` to ``high`` days after ``moment`` (moved to the
        next working day when it lands on a weekend or holiday), always after it."""
        days = _randint(rng, low, high)
        if days == 0:
            same_day = moment + datetime.timedelta(minutes=_randint(rng, 5, 180))
            if same_day.hour < 18:
                return same_day
            days = 1
        return self._business_moment(self._working_day(moment.date() + DAYS[days]), rng)

    def _working_day(self, day):
        """``day``, or the first working day after it."""
        found = self._working_days.get(day)
        if found is None:
            found = day
            while not _working(found):
                found += ONE_DAY
            self._working_days[day] = found
        return found


class _Story:
    """One deal's life, told on a clock that only moves forward. Stage methods append
    steps and return the next stage's method, or None when the story ends (won, lost for
    good, or stalled: the deal then stays open)."""

    def __init__(self, plan, rng, number, owner, moment, estimate, inbound):
        self.plan, self.rng, self.number = plan, rng, number
        self.owner, self.manager = owner, MANAGER_OF[owner]
        self.t = moment
        self.steps = []
        self.inbound = inbound
        self.stage = LEAD
        self.value = _round_money(float(estimate) * rng.uniform(0.85, 1.3), 100)
        self.versions = 0
        self.latest = None  # status of the latest offer version
        self.discount = None  # the discount of the latest negotiation round
        self.agreed = None
        self.reopened = False

    def tell(self):
        chapter = self.lead
        while chapter is not None:
            chapter = chapter()

    def step(self, action, by=None, **args):
        self.steps.append(Step(action, self.t, by or self.owner, args))

    def wait(self, low, high):
        self.t = self.plan.later(self.t, self.rng, low, high)

    def move(self, stage):
        """Move forward to ``stage``; its chapter (the method named after it) follows."""
        self.stage = stage
        self.step(MOVE, stage=stage)
        return getattr(self, stage)

    def lose(self, reasons):
        code, _, notes = reasons.pick(self.rng)
        self.step(MARK_LOST, reason=code, note=_choice(self.rng, notes))
        return self.maybe_reopen

    def disqualify(self):
        self.step(DISQUALIFY, note=_choice(self.rng, DISQUALIFY_NOTES))
        self.stage = QUALIFICATION

    def activity(self, kinds):
        kind, _, outcomes = kinds.pick(self.rng)
        self.step(LOG_ACTIVITY, kind=kind, outcome=_choice(self.rng, outcomes), notes="")

    def start_offer(self, revision):
        if revision:
            self.value = _round_money(float(self.value) * self.rng.uniform(0.9, 1.0), 100)
        self.versions += 1
        self.latest = DRAFT
        self.step(
            START_OFFER, value=self.value, notes="Wersja po uwagach klienta" if revision else ""
        )

    def send_offer(self):
        self.step(SEND_OFFER, version=self.versions)
        self.latest = SENT

    def respond(self, action):
        self.step(action, version=self.versions)
        self.latest = ACCEPTED if action == ACCEPT_OFFER else REJECTED

    # Stages

    def lead(self):
        rng = self.rng
        self.wait(0, 2)
        if self.inbound:
            r = rng.random()
            if r < 0.30:  # a referral asking for an offer skips qualification and needs
                return self.move(OFFER)
            if r < 0.40:
                return self.move(NEEDS)
        r = rng.random()
        if r < 0.02:  # nobody followed it up
            return None
        if r < 0.09:
            return self.lose(LEAD_LOSSES)
        if r < 0.14:
            self.disqualify()
            return None
        return self.move(QUALIFICATION)

    def qualification(self):
        self.wait(1, 8)
        r = self.rng.random()
        if r < 0.02:
            return None
        if r < 0.24:
            self.disqualify()
            return None
        if r < 0.30:
            return self.lose(QUALIFICATION_LOSSES)
        return self.move(NEEDS)

    def needs(self):
        rng = self.rng
        for _ in range(_choice(rng, (1, 1, 2, 2, 2, 3, 3, 4))):
            self.wait(1, 7)
            self.activity(NEEDS_ACTIVITIES)
        self.wait(1, 7)
        r = rng.random()
        if r < 0.03:
            return None
        if r < 0.30:
            return self.lose(NEEDS_LOSSES)
        return self.move(OFFER)

    def offer(self, resumed=False):
        rng = self.rng
        if resumed:  # reopened: the client asked for a new version
            self.wait(1, 5)
        self.start_offer(revision=resumed)
        while True:
            self.wait(1, 7)  # preparation
            self.send_offer()
            if rng.random() < 0.4:
                self.wait(1, 4)
                self.activity(FOLLOW_UP)
            self.wait(2, 12)  # the client's answer
            if self.versions < 3 and rng.random() < 0.3:
                if rng.random() < 0.5:
                    self.respond(REJECT_OFFER)
                self.start_offer(revision=True)
                continue
            break
        r = rng.random()
        if r < 0.02:
            return None
        if r < 0.22:
            code = OFFER_LOSSES.pick(rng)
            if code[0] != "no_response" and rng.random() < 0.7:
                self.respond(REJECT_OFFER)
            self.step(MARK_LOST, reason=code[0], note=_choice(rng, code[2]))
            return self.maybe_reopen
        if r < 0.30:  # accepted as offered: terms agreed, negotiation skipped
            self.respond(ACCEPT_OFFER)
            self.agreed = self.value
            self.discount = None
            self.wait(0, 3)
            return self.move(CLOSING)
        return self.move(NEGOTIATION)

    def negotiation(self, resumed=False):
        rng = self.rng
        if resumed:  # reopened: a revised offer, logged as a revision
            self.wait(1, 5)
            self.start_offer(revision=True)
            self.wait(1, 5)
            self.send_offer()
        for _ in range(ROUNDS.pick(rng)[0]):
            self.wait(2, 8)
            if self.discount is None:
                self.discount = _half_percent(rng, 0, 10)
            else:
                self.discount = min(MAX_DISCOUNT, self.discount + _half_percent(rng, 0, 8))
            self.step(
                ADD_ROUND,
                proposed_value=_less(self.value, self.discount),
                discount_pct=self.discount,
                notes="",
            )
        if not resumed and self.versions < 3 and rng.random() < 0.1:  # a revision
            self.wait(1, 4)
            self.start_offer(revision=True)
            self.wait(1, 4)
            self.send_offer()
        self.wait(1, 6)
        r = rng.random()
        if r < 0.02:
            return None
        if r < 0.40:
            if self.latest == SENT and rng.random() < 0.5:
                self.respond(REJECT_OFFER)
            return self.lose(NEGOTIATION_LOSSES)
        discount = self.discount if self.discount is not None else _half_percent(rng, 0, 5)
        self.agreed = _less(self.value, discount)
        self.step(AGREE_TERMS, agreed_value=self.agreed, discount_pct=discount)
        if self.latest == SENT:
            self.respond(ACCEPT_OFFER)
        self.wait(0, 3)
        return self.move(CLOSING)

    def closing(self):
        rng = self.rng
        self.wait(0, 4)
        contract = rng.random() < 0.6
        final = self.agreed
        if rng.random() < 0.1:  # the scope changed a little while drafting
            final = (final * Decimal(rng.uniform(0.98, 1.02))).quantize(CENT)
        self.step(
            SAVE_DOCUMENT,
            document_type=CONTRACT if contract else PROFORMA,
            number=f"{'UM' if contract else 'PF'}/{self.t.year}/{self.number:06d}",
            issue_date=self.t.date(),
            final_value=final,
        )
        # A contract is signed within two weeks; a pro-forma is paid within three.
        if contract:
            self.wait(1, 14)
        else:
            self.wait(3, 21)
        r = rng.random()
        if r < 0.01:
            return None
        if r < 0.10:
            return self.lose(CLOSING_LOSSES)
        self.step(WIN)
        return None

    def maybe_reopen(self):
        """A manager reopens a few deals lost at the offer or in negotiation."""
        if self.reopened or self.stage not in (OFFER, NEGOTIATION) or self.rng.random() >= 0.08:
            return None
        self.reopened = True
        self.wait(5, 30)
        self.step(REOPEN, by=self.manager)
        if self.stage == OFFER:
            return lambda: self.offer(resumed=True)
        return lambda: self.negotiation(resumed=True)


# Reference data -----------------------------------------------------------------------


class DemoDataExists(Exception):
    """The database already holds deals: the demo year is loaded into an empty funnel."""


@dataclass
class _World:
    """What the deals refer to, by the plan's keys: users by username, channels by name,
    lost reasons by code, companies by index, contacts by company index and position."""

    users: dict
    channels: dict
    reasons: dict
    company_ids: array = field(default_factory=lambda: array("q"))
    contact_offsets: array = field(default_factory=lambda: array("q", [0]))
    contact_ids: array = field(default_factory=lambda: array("q"))
    rate_dates: list = field(default_factory=list)
    rates: list = field(default_factory=list)

    def contact_id(self, company, position):
        start, stop = self.contact_offsets[company], self.contact_offsets[company + 1]
        if start == stop:
            return None
        return self.contact_ids[start + position % (stop - start)]

    def rate_on(self, day):
        """As ``funnel.money.rate_on``: the latest rate on or before ``day``."""
        i = bisect.bisect_right(self.rate_dates, day) - 1
        if i < 0:
            raise ValueError(f"No {FOREIGN_CURRENCY} rate on or before {day}.")
        return self.rates[i]


def _build_world(plan, writer):
    """Create (or find, by natural key) the cast, channels, spend, costs, rates,
    companies and contacts. Rows that exist already are kept as they are."""
    users = _cast(plan)
    channels = {c.name: Channel.objects.get_or_create(name=c.name)[0] for c in CHANNELS}
    world = _World(
        users=users,
        channels=channels,
        reasons={reason.code: reason for reason in LostReason.objects.all()},
    )
    base = plan.base_currency
    MarketingSpend.objects.bulk_create(
        [
            MarketingSpend(
                channel=channels[name],
                month=month,
                amount=amount,
                currency=base,
                amount_base=amount,
            )
            for name, month, amount in plan.marketing_spend()
        ],
        ignore_conflicts=True,  # one row per channel and month: keep what is there
    )
    teams = {team.name: team for team in Team.objects.filter(name__in=[t for t, _ in TEAMS])}
    costs = plan.sales_costs()
    existing = set(
        SalesCost.objects.filter(month__in={row[0] for row in costs}).values_list(
            "month", "team_id", "note"
        )
    )
    SalesCost.objects.bulk_create(
        SalesCost(
            month=month,
            team=teams[team] if team else None,
            amount=amount,
            currency=base,
            amount_base=amount,
            note=note,
        )
        for month, team, amount, note in costs
        if (month, teams[team].pk if team else None, note) not in existing
    )
    _targets_and_forecasts(plan, users, teams)
    # bulk_create sends no post_save: mark the months as kpis/signals.py would.
    mark_days(
        month + datetime.timedelta(days=i)
        for month in plan.months()
        for i in range(calendar.monthrange(month.year, month.month)[1])
    )
    if plan.foreign_currency:
        ExchangeRate.objects.bulk_create(
            [
                ExchangeRate(currency=plan.foreign_currency, date=day, rate=rate)
                for day, rate in plan.exchange_rates()
            ],
            ignore_conflicts=True,  # one rate per day: keep what is there
        )
        # Read back, so conversions use exactly what funnel.money.rate_on would find.
        for day, rate in (
            ExchangeRate.objects.filter(currency=plan.foreign_currency)
            .order_by("date")
            .values_list("date", "rate")
        ):
            world.rate_dates.append(day)
            world.rates.append(rate)
    _companies(plan, writer, world)
    return world


def _cast(plan):
    """The demo users and their teams, all with the password ``lejek-demo``."""
    password = None
    joined = plan.start - datetime.timedelta(days=60)
    teams = {name: Team.objects.get_or_create(name=name)[0] for name, _ in TEAMS}
    users = {}
    for username, first_name, last_name, role, team in CAST:
        user = User.objects.filter(username=username).first()
        if user is None:
            # One hash for the whole cast: the default hasher is slow on purpose.
            password = password or make_password(DEMO_PASSWORD)
            user = User.objects.create(
                username=username,
                first_name=first_name,
                last_name=last_name,
                email=f"{username}@lejek.example",
                role=role,
                team=teams[team] if team else None,
                is_staff=role == Role.ADMIN,
                is_superuser=role == Role.ADMIN,
                password=password,
                date_joined=joined,
            )
        users[username] = user
    for name, manager in TEAMS:
        if teams[name].manager_id is None:
            teams[name].manager = users[manager]
            teams[name].save(update_fields=["manager"])
    return users


def _targets_and_forecasts(plan, users, teams):
    """The year's targets and committed forecasts; rows that exist already are kept."""
    admin = users["admin"]
    targets = plan.targets()
    Target.objects.bulk_create(
        [
            Target(
                grain=Grain.MONTH,
                period_start=month,
                team=teams[team] if team else None,
                rep=users[rep] if rep else None,
                amount=amount,
                set_by=users[MANAGER_OF[rep]] if rep else admin,
                set_at=plan.start,
            )
            for month, team, rep, amount in targets
        ],
        ignore_conflicts=True,  # one target per scope and period
    )
    Forecast.objects.bulk_create(
        [
            Forecast(
                grain=Grain.MONTH,
                period_start=month,
                team=teams[team] if team else None,
                kind=ForecastKind.COMMITTED,
                amount=amount,
                entered_at=entered,
                entered_by=users[by],
            )
            for month, team, amount, entered, by in plan.forecasts(targets)
        ],
        ignore_conflicts=True,  # one forecast per scope, period and kind
    )


COMPANY_COLUMNS = (
    "id", "name", "industry", "segment", "tax_id", "website", "churned_at", "created_at",
)  # fmt: skip
CONTACT_COLUMNS = ("id", "company_id", "first_name", "last_name", "email", "phone", "position")


def _companies(plan, writer, world):
    existing, existing_contacts = {}, defaultdict(list)
    if Company.objects.exists():
        existing = dict(Company.objects.values_list("name", "id"))
        for contact_id, company_id in Contact.objects.order_by("id").values_list(
            "id", "company_id"
        ):
            existing_contacts[company_id].append(contact_id)
    for chunk in _chunks(plan.companies(), CHUNK_COMPANIES):
        new = [company for company in chunk if company.name not in existing]
        company_ids = iter(writer.reserve_ids(Company, len(new)))
        contact_ids = iter(writer.reserve_ids(Contact, sum(len(c.contacts) for c in new)))
        companies, contacts = [], []
        for company in chunk:
            company_id = existing.get(company.name)
            if company_id is None:
                company_id = next(company_ids)
                companies.append((company_id, *company[:5], None, company.created_at))
                for contact in company.contacts:
                    contact_id = next(contact_ids)
                    contacts.append((contact_id, company_id, *contact))
                    world.contact_ids.append(contact_id)
            else:
                world.contact_ids.extend(existing_contacts[company_id])
            world.company_ids.append(company_id)
            world.contact_offsets.append(len(world.contact_ids))
        writer.insert([(Company, COMPANY_COLUMNS, companies), (Contact, CONTACT_COLUMNS, contacts)])
    writer.flush()  # the deals are written by queries on the same connection


def _chunks(iterable, size):
    iterator = iter(iterable)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# Writers ------------------------------------------------------------------------------


def _writer():
    return _CopyWriter() if connection.vendor == "postgresql" else _InsertWriter()


class _InsertWriter:
    """``bulk_create`` in batches: SQLite (the local default) and any other database.
    ``insert`` takes [(model, columns, rows)], each row a tuple in ``columns`` order."""

    def __init__(self):
        self._next_id = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass

    def reserve_ids(self, model, count):
        # Inside the seeding transaction, which holds SQLite's write lock (the settings
        # begin transactions IMMEDIATE): nobody else can take these ids meanwhile.
        start = self._next_id.get(model)
        if start is None:
            start = (model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1
        self._next_id[model] = start + count
        return range(start, start + count)

    @contextlib.contextmanager
    def setting_aside_indexes(self, models):
        yield

    def insert(self, tables):
        for model, columns, rows in tables:
            model.objects.bulk_create(
                [model(**dict(zip(columns, row, strict=True))) for row in rows],
                batch_size=INSERT_BATCH_SIZE,
            )

    def flush(self):
        pass


class _CopyWriter:
    """``COPY ... FROM STDIN`` on PostgreSQL, several times faster than INSERTs, run by
    a thread on the seeding transaction's connection: the server stores one chunk while
    Python builds the next. Ids come from the tables' own sequences."""

    def __init__(self):
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seed-demo-copy")
        self._pending = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        try:
            if exc_type is None:
                self.flush()
            elif self._pending is not None:
                # Let the running COPY end before the transaction rolls back; the error
                # being raised already says what went wrong.
                wait([self._pending])
        finally:
            self._thread.shutdown()

    def reserve_ids(self, model, count):
        self.flush()  # a connection runs one statement at a time
        ids = array("q")
        with connection.cursor() as cursor:
            for start in range(0, count, ID_BLOCK):
                cursor.execute(
                    "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                    [model._meta.db_table, model._meta.pk.column, min(ID_BLOCK, count - start)],
                )
                ids.extend(row[0] for row in cursor.fetchall())
        return ids

    @contextlib.contextmanager
    def setting_aside_indexes(self, models):
        """Drop the secondary indexes and foreign keys of ``models``' tables for the
        load and recreate them from their own definitions afterwards, in the seeding
        transaction (PostgreSQL manual, "Populating a Database"; pg_restore does the
        same). Primary keys, unique indexes and checks stay. Other sessions wait on
        the tables until the commit."""
        tables = [model._meta.db_table for model in models]
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
                " FROM pg_constraint WHERE contype = 'f' AND conrelid = ANY(%s::regclass[])"
                " ORDER BY 1, 2",
                [tables],
            )
            keys = cursor.fetchall()
            cursor.execute(
                "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
                " WHERE indrelid = ANY(%s::regclass[]) AND NOT indisunique ORDER BY 1",
                [tables],
            )
            indexes = cursor.fetchall()
            for table, name, _ in keys:
                cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {quote(name)}")
            for name, _ in indexes:
                cursor.execute(f"DROP INDEX {name}")
        yield
        self.flush()
        with connection.cursor() as cursor:
            # Sorting millions of keys in memory rather than in temporary files.
            cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
            for _, definition in indexes:
                cursor.execute(definition)
            for table, name, definition in keys:
                cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {quote(name)} {definition}")

    def insert(self, tables):
        self.flush()
        quote = connection.ops.quote_name
        statements = []
        for model, columns, rows in tables:
            column_of = {f.attname: f.column for f in model._meta.concrete_fields}
            names = ", ".join(quote(column_of[c]) for c in columns)
            statements.append((f"COPY {quote(model._meta.db_table)} ({names}) FROM STDIN", rows))
        self._pending = self._thread.submit(self._copy, connection.connection, statements)

    def flush(self):
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    @staticmethod
    def _copy(psycopg_connection, statements):
        with psycopg_connection.cursor() as cursor:
            for statement, rows in statements:
                if rows:
                    with cursor.copy(statement) as copy:
                        for row in rows:
                            copy.write_row(row)


# Executors ----------------------------------------------------------------------------


class DomainExecutor:
    """Carries out every step with the domain function of the same name: the reference
    path, as a user's clicks would. A few queries per step: for small volumes."""

    name = "domain"

    def __init__(self, world, writer=None):
        self.world = world

    def run(self, plan, progress=None):
        done = 0
        # The dirty marks of every domain call written once at the end, as an import
        # does (kpis.dirty.batched): the year's back-dated events would each mark every
        # day from their moment to today.
        with batched():
            for deal_plan in plan.deals():
                self.run_deal(deal_plan)
                done += 1
                if progress and done % CHUNK_DEALS == 0:
                    progress(done)
        return done

    def run_deal(self, deal_plan):
        world, users = self.world, self.world.users
        deal, offers = None, {}
        for action, at, by, args in deal_plan.steps:
            user = users[by]
            if action == CREATE:
                company = Company.objects.get(pk=world.company_ids[args["company"]])
                contact_id = world.contact_id(args["company"], args["contact"])
                deal = domain.create_deal(
                    by=user,
                    owner=users[args["owner"]],
                    company=company,
                    contact=Contact.objects.get(pk=contact_id) if contact_id else None,
                    channel=world.channels[args["channel"]],
                    title=args["title"],
                    at=at,
                    currency=args["currency"],
                    estimated_value=args["estimated_value"],
                    first_touch_at=args["first_touch_at"],
                    external_id=args["external_id"],
                    **args["details"],
                )
            elif action == MOVE:
                domain.move_forward(deal, args["stage"], by=user, at=at)
            elif action == START_OFFER:
                offers[len(offers) + 1] = domain.start_offer(deal, by=user, at=at, **args)
            elif action == SEND_OFFER:
                domain.send_offer(offers[args["version"]], by=user, at=at)
            elif action in (ACCEPT_OFFER, REJECT_OFFER):
                getattr(domain, action)(offers[args["version"]], by=user, at=at)
                # Accepting may agree the terms through another copy of the deal.
                deal.refresh_from_db()
            elif action == ADD_ROUND:
                domain.add_round(deal, held_at=at, by=user, **args)
            elif action == AGREE_TERMS:
                domain.agree_terms(deal, by=user, at=at, **args)
            elif action == SAVE_DOCUMENT:
                domain.save_closing_document(deal, by=user, **args)
            elif action == WIN:
                domain.win(deal, by=user, at=at)
            elif action == MARK_LOST:
                reason = world.reasons[args["reason"]]
                domain.mark_lost(deal, reason, by=user, at=at, note=args["note"])
            elif action == DISQUALIFY:
                domain.disqualify(deal, by=user, at=at, **args)
            elif action == REOPEN:
                domain.reopen(deal, by=user, at=at)
            elif action == LOG_ACTIVITY:
                domain.log_activity(deal, held_at=at, by=user, **args)
            else:
                raise ValueError(f"Unknown step {action!r}")
        return deal


#: (model, the columns the replay writes), in the order the tables are written
BULK_TABLES = (
    (Deal, model_columns(Deal, with_id=True)),
    (StageHistory, HISTORY_COLUMNS),
    (Offer, OFFER_COLUMNS),
    (NegotiationRound, ROUND_COLUMNS),
    (Activity, ACTIVITY_COLUMNS),
    (ClosingDocument, DOCUMENT_COLUMNS),
    (DealChange, CHANGE_COLUMNS),
)


class BulkExecutor:
    """Replays every step in memory (:class:`_Replay`) and writes the rows a chunk of
    deals at a time: no query per deal, memory bounded by ``CHUNK_DEALS``."""

    name = "bulk"

    def __init__(self, world, writer):
        self.world, self.writer = world, writer
        check_columns(BULK_TABLES, "The bulk executor")

    def run(self, plan, progress=None):
        ids = self.writer.reserve_ids(Deal, plan.deal_count)
        done = 0
        now = timezone.now()
        dirty_days = {today()}
        models = [model for model, _ in BULK_TABLES]
        with (
            self.writer.setting_aside_indexes(models)
            if plan.deal_count >= SET_ASIDE_FROM_DEALS
            else contextlib.nullcontext()
        ):
            earliest = None
            for chunk in _chunks(plan.deals(), CHUNK_DEALS):
                replay = _Replay(self.world, now, dirty_days)
                for deal_plan in chunk:
                    replay.run_deal(deal_plan, ids[done])
                    done += 1
                if replay.earliest is not None and (earliest is None or replay.earliest < earliest):
                    earliest = replay.earliest
                self.writer.insert(
                    [(model, columns, replay.rows[model]) for model, columns in BULK_TABLES]
                )
                if progress:
                    progress(done)
        self.writer.flush()
        # One mark for the whole load: the days every domain call would have marked,
        # which include every day from each deal's creation to today (days_since).
        if earliest is not None:
            dirty_days.update(days_since(earliest))
        mark_days(dirty_days)
        return done


# Row tuples from the replay's dicts, in the tables' column order.
DEAL_ROW = operator.itemgetter(*BULK_TABLES[0][1])
OFFER_ROW = operator.itemgetter(*OFFER_COLUMNS)
DOCUMENT_ROW = operator.itemgetter(*DOCUMENT_COLUMNS)


class _Replay:
    """Replays deals' steps in memory. Each public method writes what the domain
    function of the same name writes, minus its checks: the plan holds only steps those
    functions accept (tests/funnel/test_seed_demo.py runs both paths and compares)."""

    def __init__(self, world, now, dirty_days):
        self.world = world
        # The days whose KPIs the deals feed (kpis.dirty.deal_days): every moment here
        # carries the organisation's time zone, so its date is the local date.
        self.dirty_days = dirty_days
        # The earliest creation: kpis.dirty.deal_days marks every day from a deal's
        # latest event to today, and the first mark of each deal is at its creation.
        self.earliest = None
        self.base = base_currency()
        self.defaults = {f.attname: plain(f.get_default()) for f in Deal._meta.concrete_fields}
        # The domain functions stamp the moment they write the row.
        self.defaults["updated_at"] = now
        # ... and stamp each row they write with it (``entered_at``), whatever ``at`` says.
        self.now = now
        self.not_qualified = world.reasons[LostReason.NOT_QUALIFIED].pk
        self.user_ids = {username: user.pk for username, user in world.users.items()}
        self.rows = {model: [] for model, _ in BULK_TABLES}
        self.changes = self.rows[DealChange].append

    def history(self, row):
        """A stage-history row (deal, event, from, to, at, ...): the deal keeps its
        latest moment, as the domain functions do."""
        self.rows[StageHistory].append(row)
        at, d = row[4], self.d
        if d["stage_changed_at"] is None or d["stage_changed_at"] < at:
            d["stage_changed_at"] = at

    def log_changes(self, before, current, fields, at, by):
        """The change-log rows ``domain.changed`` finds (``current``: a dict)."""
        for name, old, new in domain.changed(before, current.__getitem__, fields):
            self.changes((self.id, name, old, new, at, by, self.now))

    def run_deal(self, deal_plan, deal_id):
        self.id = deal_id
        self.offers, self.round_count, self.document = [], 0, None
        user_ids = self.user_ids
        for action, at, by, args in deal_plan.steps:
            getattr(self, action)(at, user_ids[by], **args)
        d = self.d
        self.rows[Deal].append(DEAL_ROW(d))
        self.rows[Offer].extend(map(OFFER_ROW, self.offers))
        if self.document:
            self.rows[ClosingDocument].append(DOCUMENT_ROW(self.document))
        days = self.dirty_days
        days.update(d[f].date() for f in STAMP_FIELDS if d[f] is not None)
        days.update(o[f].date() for o in self.offers for f in ("sent_at", "responded_at") if o[f])
        if d["won_at"]:
            days.add(d["won_at"].date())
        if d["expected_close_date"]:
            days.add(d["expected_close_date"])
        created = d["entered_lead_at"]
        if self.earliest is None or created < self.earliest:
            self.earliest = created

    def to_base(self, amount, currency, on):
        if amount is None:
            return None
        if currency == self.base:
            return quantize(amount)
        return quantize(amount * self.world.rate_on(local_date(on)))

    def current_value(self):
        d = self.d
        if d["status"] == WON:
            return self.document["final_value_base"]
        if d["agreed_value_base"] is not None:
            return d["agreed_value_base"]
        sent = [o for o in self.offers if o["sent_at"] is not None]
        if sent:
            return max(sent, key=lambda o: o["version"])["value_base"]
        return d["estimated_value_base"]

    def create_deal(self, at, by, *, owner, company, contact, channel, details, **fields):
        world = self.world
        d = self.d = dict(self.defaults)
        d.update(details)
        d.update(fields)
        d["estimated_value"] = cents(fields["estimated_value"])
        d.update(
            id=self.id,
            company_id=world.company_ids[company],
            contact_id=world.contact_id(company, contact),
            channel_id=world.channels[channel].pk,
            owner_id=world.users[owner].pk,
            created_by_id=by,
            external_id=fields["external_id"] or None,
            entered_lead_at=at,
            last_event_at=at,
            stage=LEAD,
            status=OPEN,
        )
        d["estimated_value_base"] = self.to_base(d["estimated_value"], d["currency"], at)
        d["current_value_base"] = d["estimated_value_base"]
        self.history((self.id, CREATED, None, LEAD, at, by, None, "", self.now))

    def move_forward(self, at, by, *, stage):
        d = self.d
        previous = d["stage"]
        for passed in PATHS[previous, stage]:
            d[STAMP_OF[passed]] = at
            event = MOVED if passed == stage else SKIPPED
            self.history((self.id, event, previous, passed, at, by, None, "", self.now))
            previous = passed
        d["stage"] = stage
        d["last_event_at"] = at
        d["version"] += 1

    def mark_lost(self, at, by, *, reason, note=""):
        self._lose(at, by, self.world.reasons[reason].pk, note)

    def _lose(self, at, by, reason_id, note):
        d = self.d
        d.update(
            status=LOST,
            lost_at=at,
            lost_reason_id=reason_id,
            lost_stage=d["stage"],
            lost_note=note or "",
            last_event_at=at,
        )
        d["version"] += 1
        stage = d["stage"]
        self.history((self.id, LOST_EVENT, stage, stage, at, by, reason_id, note or "", self.now))
        self.dirty_days.add(at.date())

    def disqualify(self, at, by, *, note=""):
        if self.d["stage"] == LEAD:
            self.move_forward(at, by, stage=QUALIFICATION)
        self._lose(at, by, self.not_qualified, note)

    def reopen(self, at, by):
        d = self.d
        d.update(
            status=OPEN,
            lost_at=None,
            lost_reason_id=None,
            lost_stage=None,
            lost_note="",
            last_event_at=at,
        )
        d["version"] += 1
        stage = d["stage"]
        self.history((self.id, REOPENED, stage, stage, at, by, None, "", self.now))

    def win(self, at, by):
        d, document = self.d, self.document
        closed_by = "signed_at" if document["document_type"] == CONTRACT else "paid_at"
        before = document[closed_by]
        document[closed_by] = at
        document["final_value_base"] = self.to_base(document["final_value"], d["currency"], at)
        d.update(
            status=WON, won_at=at, last_event_at=at, current_value_base=document["final_value_base"]
        )
        d["version"] += 1
        self.history((self.id, WON_EVENT, d["stage"], d["stage"], at, by, None, "", self.now))
        self.log_changes({closed_by: before}, document, [closed_by], at, by)

    def agree_terms(self, at, by, *, agreed_value, discount_pct=None):
        d = self.d
        before = {"agreed_value": d["agreed_value"], "discount_pct": d["discount_pct"]}
        d["agreed_value"] = agreed_value = cents(agreed_value)
        if discount_pct is not None:
            d["discount_pct"] = cents(discount_pct)
        d["agreed_value_base"] = self.to_base(agreed_value, d["currency"], at)
        d["agreed_at"] = d["last_event_at"] = at
        d["current_value_base"] = self.current_value()
        d["version"] += 1
        self.log_changes(before, d, domain.TRACKED_FIELDS, at, by)

    def start_offer(self, at, by, *, value, notes=""):
        d = self.d
        value = cents(value)
        version = len(self.offers) + 1
        prep = d["entered_offer_at"] if version == 1 and d["entered_offer_at"] else at
        self.offers.append(
            {
                "deal_id": self.id,
                "version": version,
                "value": value,
                "value_base": self.to_base(value, d["currency"], prep),
                "prep_started_at": prep,
                "sent_at": None,
                "responded_at": None,
                "status": DRAFT,
                "notes": notes,
                "created_by_id": by,
                "sent_by_id": None,
                "responded_by_id": None,
            }
        )

    def send_offer(self, at, by, *, version):
        offer = self.offers[version - 1]
        offer.update(sent_at=at, sent_by_id=by, status=SENT)
        offer["value_base"] = self.to_base(offer["value"], self.d["currency"], at)
        for earlier in self.offers[: version - 1]:
            if earlier["status"] in (DRAFT, SENT):
                earlier["status"] = SUPERSEDED
        self.d["current_value_base"] = self.current_value()

    def accept_offer(self, at, by, *, version):
        offer = self.offers[version - 1]
        offer.update(status=ACCEPTED, responded_at=at, responded_by_id=by)
        d = self.d
        if d["agreed_value"] is None and STAGE_INDEX[d["stage"]] >= STAGE_INDEX[OFFER]:
            self.agree_terms(at, by, agreed_value=offer["value"])

    def reject_offer(self, at, by, *, version):
        self.offers[version - 1].update(status=REJECTED, responded_at=at, responded_by_id=by)

    def add_round(self, at, by, *, proposed_value, discount_pct=0, notes=""):
        self.round_count += 1
        self.rows[NegotiationRound].append(
            (
                self.id,
                self.round_count,
                at,
                cents(proposed_value),
                self.to_base(cents(proposed_value), self.d["currency"], at),
                cents(Decimal(discount_pct or 0)),
                notes,
                by,
            )
        )

    def log_activity(self, at, by, *, kind, outcome="", notes=""):
        self.rows[Activity].append((self.id, kind, at, outcome, notes, by))
        d = self.d
        if d["last_activity_at"] is None or d["last_activity_at"] < at:
            d["last_activity_at"] = at
        self.dirty_days.add(at.date())

    def save_closing_document(self, at, by, *, document_type, issue_date, final_value, number=""):
        final_value = cents(final_value)
        if self.document is None:
            before = domain.NO_DOCUMENT
            self.document = {"deal_id": self.id, "signed_at": None, "paid_at": None}
        else:
            before = {name: self.document[name] for name in domain.DOCUMENT_TRACKED_FIELDS}
        document = self.document
        document.update(
            document_type=document_type,
            issue_date=issue_date,
            number=number or "",
            final_value=final_value,
            final_value_base=self.to_base(final_value, self.d["currency"], issue_date),
        )
        # The domain function dates this change with the wall clock (it takes no
        # moment); the plan's moment keeps the demo's change log in order.
        self.log_changes(before, document, domain.DOCUMENT_TRACKED_FIELDS, at, by)
        self.d["version"] += 1


# Entry point --------------------------------------------------------------------------

EXECUTORS = {"bulk": BulkExecutor, "domain": DomainExecutor}


@dataclass
class SeedResult:
    plan: DemoPlan
    executor: str
    deals: int
    seconds: float


def seed_demo(
    *, deals=DEFAULT_DEALS, seed=DEFAULT_SEED, until=None, executor="bulk", progress=None
):
    """Load the demo year into a database without deals, in one transaction."""
    started = time.monotonic()
    plan = DemoPlan(deals=deals, seed=seed, until=until)
    with transaction.atomic():
        if Deal.objects.exists():
            raise DemoDataExists(f"The database already holds {Deal.objects.count()} deals.")
        postgres = connection.vendor == "postgresql"
        if postgres:
            with connection.cursor() as cursor:
                # Check foreign keys at the end of each statement, not at commit: the
                # deferred checks of millions of rows would queue up in server memory.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        with _writer() as writer:
            world = _build_world(plan, writer)
            done = EXECUTORS[executor](world, writer).run(plan, progress)
        # The hour's trailing statistics predate the loaded deals.
        forget_inputs()
        if postgres:
            with connection.cursor() as cursor:
                # Fresh statistics, so the first queries on the new rows plan well.
                tables = [model._meta.db_table for model, _ in BULK_TABLES]
                tables += [Company._meta.db_table, Contact._meta.db_table]
                cursor.execute("ANALYZE " + ", ".join(map(connection.ops.quote_name, tables)))
    return SeedResult(plan, executor, done, time.monotonic() - started)


def deal_counts():
    """{(stage, status): deals}, for the command's summary."""
    rows = Deal.objects.values_list("stage", "status").annotate(n=Count("id")).order_by()
    return Counter({(stage, status): n for stage, status, n in rows})
