import datetime as dt
import hashlib

import numpy as np
import pyarrow as pa
import pytest

from desafio_dagster.core.source.fakedata import (
    MAX_MOVEMENTS_PER_CHUNK,
    GenerationSpec,
    InvalidSpec,
    generate,
    is_luhn_valid,
    luhn_check_digit,
    to_copy_csv,
)

SPEC = GenerationSpec(clients=3_000, accounts_per_client=(1, 4), cards_per_account=(1, 3), movements_per_card=(0, 20), seed=3)


def _concat(spec: GenerationSpec) -> dict[str, pa.Table]:
    chunks = list(generate(spec))
    return {name: pa.concat_tables([c.tables()[name] for c in chunks]) for name in chunks[0].tables()}


@pytest.fixture(scope="module")
def tables():
    return _concat(SPEC)


def _digest(spec: GenerationSpec) -> str:
    h = hashlib.sha256()
    for chunk in generate(spec):
        for table in chunk.tables().values():
            h.update(to_copy_csv(table))
    return h.hexdigest()


def test_same_seed_same_bytes_and_other_seed_other_bytes():
    assert _digest(SPEC) == _digest(SPEC)
    assert _digest(SPEC) != _digest(GenerationSpec(**{**SPEC.__dict__, "seed": 4}))


# Two chunks (5,001 clients, at most 5,000 per chunk), every field given: the defaults may change.
GOLDEN_SPEC = GenerationSpec(clients=5_001, accounts_per_client=(1, 2), cards_per_account=(1, 2), movements_per_card=(0, 3),
                             start_date=dt.date(2021, 1, 1), end_date=dt.date(2025, 12, 31), seed=2024)
GOLDEN_SHA256 = "393988e98ff1faced28309536edf754362e842143ad66bce75508b09047989ce"


def test_generated_bytes_match_the_golden_hash():
    assert len(list(generate(GOLDEN_SPEC))) == 2
    assert _digest(GOLDEN_SPEC) == GOLDEN_SHA256, (
        "the generated data changed: same config and seed must give the same data on every install. "
        "If a dependency upgrade (Faker, numpy, pyarrow, Python) or a generator change is meant to change "
        "the data, update GOLDEN_SHA256 on purpose and say so in the commit; otherwise pin the version back "
        "in pyproject.toml"
    )


def test_several_chunks_are_generated_for_large_ranges():
    spec = GenerationSpec(clients=5_000, movements_per_card=(0, 200))
    assert spec.clients_per_chunk < spec.clients
    chunks = generate(spec)
    first, second = next(chunks), next(chunks)
    for chunk in (first, second):
        assert chunk.movimento.num_rows <= MAX_MOVEMENTS_PER_CHUNK
    assert second.associado["id"][0].as_py() == first.associado.num_rows + 1
    assert second.movimento["id"][0].as_py() == first.movimento.num_rows + 1


def test_ids_are_unique_and_sequential(tables):
    for table in tables.values():
        ids = table["id"].to_numpy()
        assert np.array_equal(ids, np.arange(1, len(ids) + 1))


def test_relation_counts_are_within_ranges(tables):
    assert tables["associado"].num_rows == SPEC.clients
    for child, column, parent, (lo, hi) in [
        ("conta", "id_associado", "associado", SPEC.accounts_per_client),
        ("cartao", "id_conta", "conta", SPEC.cards_per_account),
        ("movimento", "id_cartao", "cartao", SPEC.movements_per_card),
    ]:
        counts = np.bincount(tables[child][column].to_numpy(), minlength=tables[parent].num_rows + 1)[1:]
        assert counts.min() >= lo and counts.max() <= hi
        assert counts.min() == lo and counts.max() == hi  # the whole range is used at this size
    assert set(tables["movimento"]["id_cartao"].to_numpy()) <= set(tables["cartao"]["id"].to_numpy())


def test_card_owner_is_account_owner(tables):
    account_owner = dict(zip(tables["conta"]["id"].to_pylist(), tables["conta"]["id_associado"].to_pylist()))
    for account, owner in zip(tables["cartao"]["id_conta"].to_pylist(), tables["cartao"]["id_associado"].to_pylist()):
        assert account_owner[account] == owner


def test_dates_are_ordered_and_within_the_generation_window(tables):
    start = np.datetime64(SPEC.start_date, "s")
    end = np.datetime64(SPEC.end_date + dt.timedelta(days=1), "s")
    account_created = tables["conta"]["data_criacao"].to_numpy()
    card_created = tables["cartao"]["data_criacao"].to_numpy()
    moved = tables["movimento"]["data_movimento"].to_numpy()
    card_account = tables["cartao"]["id_conta"].to_numpy() - 1
    movement_card = tables["movimento"]["id_cartao"].to_numpy() - 1
    assert (account_created >= start).all() and (account_created < end).all()
    assert (card_created >= account_created[card_account]).all() and (card_created < end).all()
    assert (moved >= card_created[movement_card]).all() and (moved < end).all()


def test_clients_are_plausible(tables):
    clients = tables["associado"]
    ages = clients["idade"].to_numpy()
    assert ages.min() >= 18 and ages.max() <= 100
    emails = clients["email"].to_pylist()
    assert len(set(e.lower() for e in emails)) == len(emails)
    assert all("@" in e and e.isascii() for e in emails)
    names = clients["nome"].to_pylist() + clients["sobrenome"].to_pylist()
    assert all(n.strip() for n in names)
    assert any(not n.isascii() for n in names), "pt_BR names carry accents"


def test_card_numbers_are_unique_luhn_valid_digits(tables):
    numbers = tables["cartao"]["num_cartao"].to_pylist()
    assert len(set(numbers)) == len(numbers)
    assert all(n.isdigit() and len(n) == 16 and is_luhn_valid(n) for n in numbers)
    assert not is_luhn_valid(numbers[0][:-1] + str((int(numbers[0][-1]) + 1) % 10))
    printed = tables["cartao"]["nom_impresso"].to_pylist()
    assert all(p.isascii() and p == p.upper() for p in printed)


def test_luhn_check_digit_matches_known_numbers():
    # 7992739871 -> check digit 3 (the classic example); 4111 1111 1111 111 -> 1
    assert luhn_check_digit(np.array([7992739871, 411111111111111])).tolist() == [3, 1]


def test_movements_have_debits_credits_and_two_decimals(tables):
    values = tables["movimento"]["vlr_transacao"]
    assert values.type == pa.decimal128(10, 2)
    as_float = np.array([float(v) for v in values.to_pylist()])
    assert (as_float < 0).mean() > 0.7 and (as_float > 0).mean() > 0.05
    descriptions = tables["movimento"]["des_transacao"].to_pylist()
    for value, description in zip(as_float[:2000], descriptions[:2000]):
        assert (value > 0) == (not description.startswith("Compra"))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"clients": -1}, "clients"),
        ({"clients": 0}, "clients"),
        ({"accounts_per_client": (3, 1)}, "accounts_per_client"),
        ({"accounts_per_client": (0, 1)}, "accounts_per_client"),
        ({"cards_per_account": (1,)}, "cards_per_account"),
        ({"movements_per_card": (-1, 5)}, "movements_per_card"),
        ({"start_date": "2024-02-01", "end_date": "2024-01-01"}, "end_date"),
        ({"end_date": str(dt.date.today() + dt.timedelta(days=1))}, "end_date"),
        ({"end_date": str(dt.datetime.now(dt.UTC).date())}, "end_date"),  # today's evening is the future
        ({"start_date": "01/02/2024"}, "start_date"),
        ({"seed": -5}, "seed"),
    ],
)
def test_invalid_spec_names_the_field(changes, field):
    with pytest.raises(InvalidSpec, match=field):
        GenerationSpec(**changes)
