"""Deterministic fake data for the source database. Pure: no Dagster here.

Faker is too slow to make rows one by one (~37k rows/s), so it only draws small
pools of pt_BR names, companies and e-mail domains; numpy builds the rows from a
seeded generator, chunk by chunk, so memory stays bounded whatever the size.
Same spec, same seed: same bytes (with the Faker, numpy and pyarrow pinned in pyproject.toml,
which a golden test holds to). Timestamps are UTC.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from desafio_dagster.core.text import fold_ascii

TABLES = ("associado", "conta", "cartao", "movimento")
ACCOUNT_TYPES = ("corrente", "poupanca", "salario", "investimento")
_ACCOUNT_TYPE_WEIGHTS = (0.55, 0.25, 0.12, 0.08)
# A chunk never holds more than this many movements (at the ranges' maxima).
MAX_MOVEMENTS_PER_CHUNK = 500_000
_MAX_CLIENTS_PER_CHUNK = 5_000
# Card numbers: a 6-digit issuer prefix, 9 digits unique per card id, a Luhn digit.
_CARD_PREFIXES = np.array([453211, 471612, 498765, 515590, 522688, 536804, 549102, 650487], dtype=np.int64)
_CARD_ID_SPACE = 10**9
_CARD_ID_MULTIPLIER = 387_420_489  # 3**18: coprime with 10**9, so ids map one-to-one
_DEBIT_CATEGORIES = (
    "Supermercado", "Farmácia", "Posto de combustível", "Restaurante", "Padaria", "Açougue",
    "Loja de roupas", "Eletrônicos", "Livraria", "Transporte por aplicativo", "Hotel",
    "Companhia aérea", "Academia", "Pet shop", "Material de construção", "Assinatura digital",
)


class InvalidSpec(ValueError):
    """A generation spec that cannot be generated; the message names the field."""


def _range(name: str, value: Sequence[int], low: int) -> tuple[int, int]:
    if len(value) != 2:
        raise InvalidSpec(f"{name} must be [min, max], got {list(value)}")
    lo, hi = (int(v) for v in value)
    if lo < low:
        raise InvalidSpec(f"{name} minimum must be >= {low}, got {lo}")
    if lo > hi:
        raise InvalidSpec(f"{name} must be [min, max] with min <= max, got [{lo}, {hi}]: write [{hi}, {lo}]")
    return lo, hi


@dataclass(frozen=True)
class GenerationSpec:
    """What to generate. Validated on construction: bad values raise InvalidSpec."""

    clients: int = 1_000
    accounts_per_client: tuple[int, int] = (1, 3)
    cards_per_account: tuple[int, int] = (1, 2)
    movements_per_card: tuple[int, int] = (0, 66)
    start_date: dt.date = dt.date(2021, 1, 1)
    end_date: dt.date = dt.date(2025, 12, 31)
    seed: int = 42

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise InvalidSpec(f"clients must be >= 1, got {self.clients}")
        set_ = object.__setattr__
        set_(self, "accounts_per_client", _range("accounts_per_client", self.accounts_per_client, 1))
        set_(self, "cards_per_account", _range("cards_per_account", self.cards_per_account, 1))
        set_(self, "movements_per_card", _range("movements_per_card", self.movements_per_card, 0))
        for name in ("start_date", "end_date"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    set_(self, name, dt.date.fromisoformat(value))
                except ValueError:
                    raise InvalidSpec(f"{name} must be a date YYYY-MM-DD, got {value!r}") from None
        if self.end_date < self.start_date:
            raise InvalidSpec(f"end_date {self.end_date} is before start_date {self.start_date}")
        today = dt.datetime.now(dt.UTC).date()
        if self.end_date >= today:  # the end date's timestamps run to 23:59:59 (UTC)
            raise InvalidSpec(f"end_date {self.end_date} must be before today ({today}, UTC): data must not be in the future")
        if self.seed < 0:
            raise InvalidSpec(f"seed must be >= 0, got {self.seed}")
        max_cards = self.clients * self.accounts_per_client[1] * self.cards_per_account[1]
        if max_cards >= _CARD_ID_SPACE:
            raise InvalidSpec(
                f"clients x accounts_per_client max x cards_per_account max = {max_cards} cards: "
                f"must stay below {_CARD_ID_SPACE} (unique card numbers)"
            )

    @property
    def max_movements_per_client(self) -> int:
        return self.accounts_per_client[1] * self.cards_per_account[1] * max(1, self.movements_per_card[1])

    @property
    def expected_rows(self) -> int:
        """Rows of the four tables on average (the counts per parent are drawn uniformly)."""
        accounts = self.clients * sum(self.accounts_per_client) / 2
        cards = accounts * sum(self.cards_per_account) / 2
        return round(self.clients + accounts + cards + cards * sum(self.movements_per_card) / 2)

    @property
    def clients_per_chunk(self) -> int:
        """Depends on the spec only, so chunk boundaries (and the data) are deterministic."""
        by_rows = MAX_MOVEMENTS_PER_CHUNK // self.max_movements_per_client
        return max(1, min(_MAX_CLIENTS_PER_CHUNK, by_rows))


@dataclass
class SourceChunk:
    """Rows for the four tables, as Arrow tables whose columns are the DDL's columns."""

    associado: pa.Table
    conta: pa.Table
    cartao: pa.Table
    movimento: pa.Table

    def tables(self) -> dict[str, pa.Table]:
        return {name: getattr(self, name) for name in TABLES}


def luhn_check_digit(payload: np.ndarray) -> np.ndarray:
    """Luhn check digit for each non-negative integer in payload (vectorised)."""
    total = np.zeros(payload.shape, dtype=np.int64)
    rest = payload.astype(np.int64)
    position = 0
    while np.any(rest):
        digit = rest % 10
        if position % 2 == 0:  # rightmost payload digit is doubled once the check digit is appended
            digit = digit * 2
            digit = np.where(digit > 9, digit - 9, digit)
        total += digit
        rest //= 10
        position += 1
    return (10 - total % 10) % 10


def is_luhn_valid(number: str) -> bool:
    digits = [int(c) for c in number]
    checksum = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        checksum += d
    return checksum % 10 == 0


@dataclass
class _Pools:
    """Small pools drawn once from Faker (pt_BR); rows index into them."""

    first_names: pa.Array
    last_names: pa.Array
    first_slugs: pa.Array
    last_slugs: pa.Array
    email_domains: pa.Array
    descriptions: pa.Array
    description_is_credit: np.ndarray = field(repr=False)

    @classmethod
    def draw(cls, seed: int) -> _Pools:
        from faker import Faker  # here: every process that loads the definitions would import it (0.05 s)

        fake = Faker("pt_BR")
        fake.seed_instance(seed)
        first = _unique(fake.first_name() for _ in range(3_000))
        last = _unique(fake.last_name() for _ in range(3_000))
        companies = _unique(fake.company() for _ in range(400))
        domains = _unique(fake.free_email_domain() for _ in range(200))
        debits = [f"Compra {category.lower()}: {company}" for category in _DEBIT_CATEGORIES for company in companies[:60]]
        credits = [f"Estorno: {company}" for company in companies[60:160]]
        credits += ["Pagamento de fatura", "Cashback", "Crédito de anuidade", "Ajuste a crédito"]
        return cls(
            first_names=pa.array(first),
            last_names=pa.array(last),
            first_slugs=pa.array([_email_part(n) for n in first]),
            last_slugs=pa.array([_email_part(n) for n in last]),
            email_domains=pa.array(domains),
            descriptions=pa.array(debits + credits),
            description_is_credit=np.array([False] * len(debits) + [True] * len(credits)),
        )

    @cached_property
    def debit_indexes(self) -> np.ndarray:
        return np.flatnonzero(~self.description_is_credit)

    @cached_property
    def credit_indexes(self) -> np.ndarray:
        return np.flatnonzero(self.description_is_credit)


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _email_part(name: str) -> str:
    return "".join(c for c in fold_ascii(name).lower() if c.isalnum())


def _seconds(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def _later(rng: np.random.Generator, earliest: np.ndarray, latest: int) -> np.ndarray:
    """A uniform instant in [earliest, latest] for each earliest (epoch seconds)."""
    return earliest + (rng.random(earliest.shape[0]) * (latest - earliest + 1)).astype(np.int64)


def _counts(rng: np.random.Generator, n: int, bounds: tuple[int, int]) -> np.ndarray:
    return rng.integers(bounds[0], bounds[1] + 1, size=n)


def _timestamps(seconds: np.ndarray) -> pa.Array:
    return pa.array(seconds, type=pa.timestamp("s"))


def _money(cents: np.ndarray) -> pa.Array:
    exact = pc.multiply(pa.array(cents, pa.int64()).cast(pa.decimal128(19, 0)), pa.scalar(Decimal("0.01"), pa.decimal128(2, 2)))
    return exact.cast(pa.decimal128(10, 2))


def generate(spec: GenerationSpec) -> Iterator[SourceChunk]:
    """Yield the source database in chunks of spec.clients_per_chunk clients.

    Ids are 1..N per table in generation order; each chunk is drawn from its own
    generator seeded by (seed, chunk number), so a chunk never depends on memory
    layout or on how the caller consumes the stream.
    """
    pools = _Pools.draw(spec.seed)
    start, end = _seconds(spec.start_date), _seconds(spec.end_date) + 86_399
    next_id = {name: 1 for name in TABLES}
    for chunk_number, first_client in enumerate(range(0, spec.clients, spec.clients_per_chunk)):
        rng = np.random.default_rng([spec.seed, chunk_number])
        n_clients = min(spec.clients_per_chunk, spec.clients - first_client)
        chunk = _chunk(rng, spec, pools, next_id, n_clients, start, end, _card_offset(spec.seed))
        for name, table in chunk.tables().items():
            next_id[name] += table.num_rows
        yield chunk


@dataclass(frozen=True)
class GrowthSpec:
    """Days of activity to add after the source's last day. Validated on construction: bad values raise
    InvalidSpec. Each day, round(active_clients x clients) existing clients get movements_per_card new
    movements on one of their cards, and round(new_clients x clients) new clients join, with
    accounts_per_client accounts, cards_per_account cards per account and movements_per_card movements
    per card, all dated that day ("clients": those in the source at the start of the day)."""

    days: int = 1
    active_clients: float = 0.01
    new_clients: float = 0.001
    movements_per_card: tuple[int, int] = (1, 5)
    accounts_per_client: tuple[int, int] = GenerationSpec.accounts_per_client
    cards_per_account: tuple[int, int] = GenerationSpec.cards_per_account
    seed: int = 42

    def __post_init__(self) -> None:
        if isinstance(self.days, bool) or not isinstance(self.days, int) or self.days < 1:
            raise InvalidSpec(f"days must be an integer >= 1, got {self.days!r}")
        if not 0 < self.active_clients <= 1:  # also refuses NaN
            raise InvalidSpec(f"active_clients must be a share in (0, 1], got {self.active_clients!r}")
        if not (0 <= self.new_clients < math.inf):
            raise InvalidSpec(f"new_clients must be a share >= 0, got {self.new_clients!r}")
        set_ = object.__setattr__
        set_(self, "movements_per_card", _range("movements_per_card", self.movements_per_card, 1))
        set_(self, "accounts_per_client", _range("accounts_per_client", self.accounts_per_client, 1))
        set_(self, "cards_per_account", _range("cards_per_account", self.cards_per_account, 1))
        if self.seed < 0:
            raise InvalidSpec(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class SourceState:
    """What growth needs to know of the source as it is: the next id of each table, the source's last
    calendar day (UTC), its clients, and its cards with their owners. No card creation instant: last_day
    is the latest day of every timestamp, card creations included, so a movement within a later day always
    comes after its card's creation."""

    next_id: dict[str, int]
    last_day: dt.date
    client_ids: np.ndarray  # int64, ascending
    card_ids: np.ndarray  # int64
    card_owners: np.ndarray  # int64: the owner of the card (and of its account), per card
    card_offset: int | None  # the card numbering's offset (card_number_offset); None: the seed's


def card_number_offset(card_ids: np.ndarray, unique_parts: np.ndarray) -> int | None:
    """The offset the cards' numbers were made with, from each card's id and the 9 digits after its 6-digit
    prefix (-1 where the number is not a generated one); None if there are no cards or they do not share one
    offset. New cards numbered with the offset of the source's never repeat one of its generated numbers."""
    if len(card_ids) == 0 or (unique_parts < 0).any():
        return None
    offsets = np.unique((unique_parts - card_ids % _CARD_ID_SPACE * _CARD_ID_MULTIPLIER) % _CARD_ID_SPACE)
    return int(offsets[0]) if len(offsets) == 1 else None


# Tags the day generators of growth, so none of them is a generator of generate() ([seed, chunk]).
_GROWTH_TAG = 0x67726F77  # "grow"


def grow(spec: GrowthSpec, state: SourceState) -> Iterator[SourceChunk]:
    """One chunk per day after state.last_day: that day's new movements of active clients, and its new
    clients with their accounts, cards and movements. Ids continue from state.next_id. Each day is drawn
    from its own generator, seeded by (seed, a constant tag, the day), on the state as the previous days
    left it: the same state and spec give the same bytes, and growing d days, then e days, gives what
    growing d + e days at once gives. Raises InvalidSpec at once (before any chunk) if a day would not
    be before today (UTC)."""
    today = dt.datetime.now(dt.UTC).date()
    last = state.last_day + dt.timedelta(days=spec.days)
    if last >= today:  # a day's timestamps run to 23:59:59 (UTC)
        possible = max(0, (today - state.last_day).days - 1)
        raise InvalidSpec(
            f"days: {spec.days} day(s) after the source's last day {state.last_day} would reach {last}, but every "
            f"day must be before today ({today}, UTC): at most {possible} more day(s) are possible"
        )
    return _grow(spec, state)


def _grow(spec: GrowthSpec, state: SourceState) -> Iterator[SourceChunk]:
    pools = _Pools.draw(spec.seed)
    card_offset = _card_offset(spec.seed) if state.card_offset is None else state.card_offset
    next_id = dict(state.next_id)
    clients = np.asarray(state.client_ids, dtype=np.int64)
    # Cards ordered by owner, then id: a client's cards are one slice. New clients' cards keep the
    # order when appended (their owners' ids are above every existing one, in ascending order).
    order = np.lexsort((state.card_ids, state.card_owners))
    card_ids = np.asarray(state.card_ids, dtype=np.int64)[order]
    owners = np.asarray(state.card_owners, dtype=np.int64)[order]
    max_cards_per_client = spec.accounts_per_client[1] * spec.cards_per_account[1]
    for day_number in range(1, spec.days + 1):
        day = state.last_day + dt.timedelta(days=day_number)
        start, end = _seconds(day), _seconds(day) + 86_399
        rng = np.random.default_rng([spec.seed, _GROWTH_TAG, day.toordinal()])

        # active clients: one card each, its new movements within the day
        holders = np.unique(owners)  # clients with a card
        n_active = min(round(spec.active_clients * len(clients)), len(holders))
        active = holders[np.sort(rng.choice(len(holders), size=n_active, replace=False))]
        first_card = np.searchsorted(owners, active, "left")
        cards_held = np.searchsorted(owners, active, "right") - first_card
        picked = first_card + (rng.random(n_active) * cards_held).astype(np.int64)
        per_card = _counts(rng, n_active, spec.movements_per_card)
        activity = _movements(rng, pools, card_ids[picked], np.full(n_active, start, dtype=np.int64), end, per_card,
                              next_id["movimento"])
        next_id["movimento"] += activity.num_rows

        # new clients, everything of theirs dated within the day
        n_new = round(spec.new_clients * len(clients))
        if next_id["cartao"] + n_new * max_cards_per_client >= _CARD_ID_SPACE:
            raise InvalidSpec(f"new_clients: day {day} could take card ids past {_CARD_ID_SPACE} (unique card numbers)")
        joined = _chunk(rng, spec, pools, next_id, n_new, start, end, card_offset)
        for name, table in joined.tables().items():
            next_id[name] += table.num_rows
        clients = np.concatenate([clients, joined.associado["id"].to_numpy()])
        card_ids = np.concatenate([card_ids, joined.cartao["id"].to_numpy()])
        owners = np.concatenate([owners, joined.cartao["id_associado"].to_numpy()])
        yield SourceChunk(joined.associado, joined.conta, joined.cartao, pa.concat_tables([activity, joined.movimento]))


def _card_offset(seed: int) -> int:
    """The generation's card-number offset: the 9 digits unique per card are (id x multiplier + offset) mod 10**9."""
    return (seed * 7_919) % _CARD_ID_SPACE


def _chunk(rng: np.random.Generator, spec: GenerationSpec | GrowthSpec, pools: _Pools, next_id: dict[str, int], n_clients: int, start: int, end: int,
           card_offset: int) -> SourceChunk:
    """n_clients new clients with their accounts, cards and movements, dated in [start, end] (epoch
    seconds). spec gives accounts_per_client, cards_per_account and movements_per_card ([min, max])."""
    # associado
    client_ids = np.arange(next_id["associado"], next_id["associado"] + n_clients, dtype=np.int64)
    first = rng.integers(0, len(pools.first_names), n_clients)
    last = rng.integers(0, len(pools.last_names), n_clients)
    second_last = rng.integers(0, len(pools.last_names), n_clients)
    has_two_surnames = rng.random(n_clients) < 0.6
    nome = pools.first_names.take(first)
    sobrenome = pc.if_else(
        pa.array(has_two_surnames),
        pc.binary_join_element_wise(pools.last_names.take(last), pools.last_names.take(second_last), " "),
        pools.last_names.take(last),
    )
    email_user = pc.binary_join_element_wise(pools.first_slugs.take(first), pools.last_slugs.take(last), ".")
    domain = pools.email_domains.take(rng.integers(0, len(pools.email_domains), n_clients))
    email = pc.binary_join_element_wise(email_user, pa.array(client_ids).cast(pa.string()), "")
    email = pc.binary_join_element_wise(email, domain, "@")
    idade = np.clip(np.round(rng.normal(42, 14, n_clients)), 18, 100).astype(np.int32)
    associado = pa.table({"id": client_ids, "nome": nome, "sobrenome": sobrenome, "idade": idade, "email": email})

    # conta: 1..N per client
    per_client = _counts(rng, n_clients, spec.accounts_per_client)
    n_accounts = int(per_client.sum())
    account_ids = np.arange(next_id["conta"], next_id["conta"] + n_accounts, dtype=np.int64)
    account_owner_row = np.repeat(np.arange(n_clients), per_client)
    account_created = start + (rng.random(n_accounts) * (end - start + 1)).astype(np.int64)
    account_type = rng.choice(len(ACCOUNT_TYPES), size=n_accounts, p=_ACCOUNT_TYPE_WEIGHTS)
    conta = pa.table({
        "id": account_ids,
        "tipo": pa.array(ACCOUNT_TYPES).take(account_type),
        "data_criacao": _timestamps(account_created),
        "id_associado": client_ids[account_owner_row],
    })

    # cartao: 1..N per account, owned by the account's owner, created after the account
    per_account = _counts(rng, n_accounts, spec.cards_per_account)
    n_cards = int(per_account.sum())
    card_ids = np.arange(next_id["cartao"], next_id["cartao"] + n_cards, dtype=np.int64)
    card_account_row = np.repeat(np.arange(n_accounts), per_account)
    card_owner_row = account_owner_row[card_account_row]
    card_created = _later(rng, account_created[card_account_row], end)
    unique_part = (card_ids * _CARD_ID_MULTIPLIER + card_offset) % _CARD_ID_SPACE
    payload = _CARD_PREFIXES[rng.integers(0, len(_CARD_PREFIXES), n_cards)] * _CARD_ID_SPACE + unique_part
    card_numbers = payload * 10 + luhn_check_digit(payload)
    printed = pc.utf8_upper(pc.binary_join_element_wise(nome.take(card_owner_row), sobrenome.take(card_owner_row), " "))
    cartao = pa.table({
        "id": card_ids,
        "num_cartao": pa.array(card_numbers).cast(pa.string()),
        "nom_impresso": pa.array([fold_ascii(name) for name in printed.to_pylist()], pa.string()),  # embossed: ASCII
        "data_criacao": _timestamps(card_created),
        "id_conta": account_ids[card_account_row],
        "id_associado": client_ids[card_owner_row],
    })

    # movimento: 0..N per card, between the card's creation and the end date
    per_card = _counts(rng, n_cards, spec.movements_per_card)
    movimento = _movements(rng, pools, card_ids, card_created, end, per_card, next_id["movimento"])
    return SourceChunk(associado, conta, cartao, movimento)


def _movements(rng: np.random.Generator, pools: _Pools, card_ids: np.ndarray, card_created: np.ndarray, end: int, per_card: np.ndarray,
               first_id: int) -> pa.Table:
    """per_card[i] movements on card card_ids[i], each between card_created[i] and end (epoch seconds),
    with ids from first_id: debits mostly, some credits, log-normal amounts."""
    n_movements = int(per_card.sum())
    movement_card_row = np.repeat(np.arange(len(card_ids)), per_card)
    is_credit = rng.random(n_movements) < 0.12
    description = np.where(
        is_credit,
        pools.credit_indexes[rng.integers(0, len(pools.credit_indexes), n_movements)],
        pools.debit_indexes[rng.integers(0, len(pools.debit_indexes), n_movements)],
    )
    cents = np.clip(np.round(np.exp(rng.normal(np.log(8_000), 1.1, n_movements))), 100, 5_000_000).astype(np.int64)
    return pa.table({
        "id": np.arange(first_id, first_id + n_movements, dtype=np.int64),
        "vlr_transacao": _money(np.where(is_credit, cents, -cents)),
        "des_transacao": pools.descriptions.take(description),
        "data_movimento": _timestamps(_later(rng, card_created[movement_card_row], end)),
        "id_cartao": card_ids[movement_card_row],
    })


def to_copy_csv(table: pa.Table) -> bytes:
    """The table as CSV for Postgres COPY ... FROM STDIN (FORMAT csv), no header."""
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False))
    return sink.getvalue()
