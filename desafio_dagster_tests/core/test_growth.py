"""Growth of the source (fakedata.grow, loading.grow) on real Postgres databases."""

import contextlib
import datetime as dt
import math

import pytest

from desafio_dagster.core.source import fakedata, loading
from desafio_dagster.core.source.fakedata import TABLES, GenerationSpec, GrowthSpec, InvalidSpec, generate
from desafio_dagster.core.source.source_db import SourceDatabase, SourceDatabaseError
from desafio_dagster.defs.assets.source_checks import evaluate
from desafio_dagster_tests.helpers import fresh_database

# 200 clients: the shares below make whole numbers of clients a day (20 active, 4 new on the first day).
SOURCE = GenerationSpec(clients=200, accounts_per_client=(1, 2), cards_per_account=(1, 2), movements_per_card=(0, 5),
                        end_date=dt.date(2025, 12, 31), seed=11)
GROWTH = GrowthSpec(days=3, active_clients=0.1, new_clients=0.02, seed=5)


def _populated(server_url: str, stack, spec: GenerationSpec = SOURCE) -> SourceDatabase:
    """A fresh database holding spec's source (dropped when stack closes)."""
    _, url = stack.enter_context(fresh_database(server_url, "desafio_growth"))
    db = SourceDatabase(url)
    loading.replace(db, generate(spec))
    return db


def _rows(db: SourceDatabase) -> dict[str, dict[int, str]]:
    """Every row of the four tables as text, by id."""
    with db.connect() as conn:
        return {table: dict(conn.execute(f"SELECT t.id, t::text FROM {table} t ORDER BY t.id").fetchall())
                for table in TABLES}


@pytest.fixture
def stack():
    with contextlib.ExitStack() as stack:
        yield stack


def test_same_source_and_spec_give_the_same_rows_and_another_seed_other_rows(server_url, stack):
    first, second, in_two_steps, other_seed = (_populated(server_url, stack) for _ in range(4))
    loading.grow(first, GROWTH)
    loading.grow(second, GROWTH)
    assert _rows(first) == _rows(second)
    # The days are drawn on the state the previous days left: 1 day, then 2 days, is the same growth.
    loading.grow(in_two_steps, GrowthSpec(**{**GROWTH.__dict__, "days": 1}))
    loading.grow(in_two_steps, GrowthSpec(**{**GROWTH.__dict__, "days": 2}))
    assert _rows(in_two_steps) == _rows(first)
    loading.grow(other_seed, GrowthSpec(**{**GROWTH.__dict__, "seed": 6}))
    grown, other = _rows(first), _rows(other_seed)
    assert grown["movimento"] != other["movimento"] and grown["associado"] != other["associado"]


def test_growth_keeps_every_row_and_only_adds_rows_dated_in_the_new_days(server_url, stack):
    db = _populated(server_url, stack)
    before = _rows(db)
    added = loading.grow(db, GROWTH)
    after = _rows(db)
    for table in TABLES:
        old = {row_id: row for row_id, row in after[table].items() if row_id <= max(before[table])}
        assert old == before[table], f"{table}: existing rows changed"
        new_ids = sorted(set(after[table]) - set(before[table]))
        assert len(new_ids) == added[table] > 0
        assert new_ids == list(range(max(before[table]) + 1, max(before[table]) + 1 + added[table])), "ids continue"
    with db.connect() as conn:
        first_new = {t: max(before[t]) + 1 for t in TABLES}
        days = conn.execute(
            """SELECT min(d)::date, max(d)::date FROM (
                   SELECT data_criacao d FROM conta WHERE id >= %(conta)s UNION ALL
                   SELECT data_criacao FROM cartao WHERE id >= %(cartao)s UNION ALL
                   SELECT data_movimento FROM movimento WHERE id >= %(movimento)s) x""", first_new).fetchone()
    assert days == (dt.date(2026, 1, 1), dt.date(2026, 1, 3))
    assert [(rule.name, count) for rule, count, _ in evaluate(db) if count] == [], "the 17 source rules hold"


def test_each_day_touches_the_shares_of_the_clients_it_starts_with(server_url, stack):
    db = _populated(server_url, stack)
    loading.grow(db, GROWTH)
    clients = SOURCE.clients
    with db.connect() as conn:
        for day in (dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)):
            new = conn.execute("SELECT DISTINCT id_associado FROM conta WHERE data_criacao::date = %s", (day,)).fetchall()
            active = conn.execute(
                """SELECT k.id_associado, count(DISTINCT k.id), count(*) FROM movimento m JOIN cartao k ON k.id = m.id_cartao
                   WHERE m.data_movimento::date = %s AND k.data_criacao::date < %s GROUP BY k.id_associado""",
                (day, day)).fetchall()
            assert len(active) == round(GROWTH.active_clients * clients), day
            assert len(new) == round(GROWTH.new_clients * clients), day
            assert all(cards == 1 and 1 <= movements <= 5 for _, cards, movements in active), "one card, 1..5 movements"
            assert {client for client, _, _ in active}.isdisjoint(client for (client,) in new)
            assert max(client for client, _, _ in active) <= clients, "active clients are clients of the day before"
            clients += len(new)
        assert conn.execute("SELECT count(*) FROM associado").fetchone()[0] == clients


def test_growing_a_missing_or_empty_source_says_to_populate_first(source_db):
    with pytest.raises(SourceDatabaseError, match=r"sicooperative\.associado.*run the populate job first"):
        loading.grow(source_db, GrowthSpec())
    source_db.apply_schema()
    with pytest.raises(SourceDatabaseError, match="empty.*run the populate job first"):
        loading.grow(source_db, GrowthSpec())


def test_a_growth_reaching_today_is_refused_and_changes_nothing(server_url, stack):
    today = dt.datetime.now(dt.UTC).date()
    recent = GenerationSpec(**{**SOURCE.__dict__, "start_date": today - dt.timedelta(days=20),
                               "end_date": today - dt.timedelta(days=3)})
    db = _populated(server_url, stack, recent)
    with db.connect() as conn:
        last = loading.growth_state(db, conn).last_day  # the end date, unless no row fell on it
    possible = (today - last).days - 1
    assert possible >= 2
    before = db.row_counts()
    with pytest.raises(InvalidSpec, match=rf"days: {possible + 1} day.*last day {last}.*at most {possible} more day"):
        loading.grow(db, GrowthSpec(days=possible + 1, active_clients=0.1))
    assert db.row_counts() == before
    loading.grow(db, GrowthSpec(days=possible, active_clients=0.1))  # up to yesterday
    with pytest.raises(InvalidSpec, match="at most 0 more day"):
        loading.grow(db, GrowthSpec(days=1, active_clients=0.1))


def test_card_numbers_not_made_by_the_generator_that_collide_fail_the_growth_clearly(server_url, stack):
    db = _populated(server_url, stack)
    with db.connect() as conn:
        state = loading.growth_state(db, conn)
        # Cards 1..8 take the numbers the first new card would get with each of the 8 issuer prefixes.
        unique = (state.next_id["cartao"] * fakedata._CARD_ID_MULTIPLIER + state.card_offset) % fakedata._CARD_ID_SPACE
        payloads = fakedata._CARD_PREFIXES * fakedata._CARD_ID_SPACE + unique
        numbers = payloads * 10 + fakedata.luhn_check_digit(payloads)
        for card_id, number in enumerate(numbers.tolist(), 1):
            conn.execute("UPDATE cartao SET num_cartao = %s WHERE id = %s", (str(number), card_id))
    before = _rows(db)
    with pytest.raises(SourceDatabaseError, match=r"nothing added: a new row repeats .*cartao_num_cartao_key.*populate"):
        loading.grow(db, GROWTH)
    assert _rows(db) == before


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"days": 0}, "days"),
        ({"days": 1.5}, "days"),
        ({"active_clients": 0}, "active_clients"),
        ({"active_clients": 1.2}, "active_clients"),
        ({"active_clients": math.nan}, "active_clients"),
        ({"new_clients": -0.1}, "new_clients"),
        ({"new_clients": math.inf}, "new_clients"),
        ({"movements_per_card": (0, 5)}, "movements_per_card"),
        ({"movements_per_card": (5, 1)}, "movements_per_card"),
        ({"accounts_per_client": (0, 1)}, "accounts_per_client"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_growth_spec_names_the_field(changes, field):
    with pytest.raises(InvalidSpec, match=field):
        GrowthSpec(**changes)


def test_a_reader_holding_the_tables_does_not_stop_a_growth_and_keeps_its_snapshot(server_url, stack):
    db = _populated(server_url, stack)
    before = db.row_counts()
    with db.connect(purpose="export") as reader:  # as the export's transaction: share-locked, one snapshot
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("LOCK TABLE associado, conta, cartao, movimento IN ACCESS SHARE MODE")
        assert db.row_counts(reader) == before
        db.lock_timeout = 2.0
        added = loading.grow(db, GROWTH)  # EXCLUSIVE does not wait for ACCESS SHARE
        assert db.row_counts(reader) == before, "the reader's snapshot is unchanged"
        reader.execute("COMMIT")
    assert db.row_counts() == {table: before[table] + added[table] for table in TABLES}
