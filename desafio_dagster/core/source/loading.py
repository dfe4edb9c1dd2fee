"""The operational Postgres database's loading: the snapshot replaced (populate) and days of activity added
(growth), each in one transaction, as functions of a SourceDatabase. Pure: no Dagster."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import psycopg
from psycopg import sql

from desafio_dagster.core.source import fakedata, journal
from desafio_dagster.core.source.fakedata import (
    TABLES,
    GrowthSpec,
    SourceChunk,
    SourceState,
    card_number_offset,
    to_copy_csv,
)
from desafio_dagster.core.source.pg import one
from desafio_dagster.core.source.source_db import (
    POPULATE_FIRST,
    SourceDatabase,
    SourceDatabaseError,
    describe,
    identifiers,
)


def replace(
    db: SourceDatabase,
    chunks: Iterable[SourceChunk],
    on_progress: Callable[[int, float], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Replace the four tables with the chunks' rows in one transaction.

    Readers of the four tables wait for the commit, then see the new snapshot; a
    failure rolls back to the old one. The tables are locked first, in one statement,
    so a concurrent export either finishes first or waits (no deadlock).
    Foreign keys and secondary indexes are dropped for the load and rebuilt from
    their catalogue definitions: one validating scan instead of a trigger per row.
    """
    with db.connect(purpose="populate") as conn, conn.transaction():
        _populate_lock(db, conn, on_wait)
        db.apply_schema(conn)
        db.lock_tables(conn, "ACCESS EXCLUSIVE", on_wait)
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        foreign_keys, indexes = _secondary_definitions(db, conn)
        for table, name, _ in foreign_keys:
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(name))
            )
        for name, _ in indexes:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        with journal.paused_for_load(conn):  # the journal records "every client", not each row
            conn.execute(sql.SQL("TRUNCATE {}").format(identifiers(TABLES)))
            counts = _copy_chunks(conn, chunks, on_progress)
        for _, definition in indexes:
            conn.execute(definition)
        for table, name, definition in foreign_keys:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(sql.Identifier(table), sql.Identifier(name))
                + sql.SQL(definition)
            )
    _analyze(db, "populate")
    return counts


def grow(
    db: SourceDatabase,
    spec: GrowthSpec,
    on_progress: Callable[[int, float], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
    on_day: Callable[[dt.date, dict[str, int]], None] | None = None,
) -> dict[str, int]:
    """Add spec.days days of activity after the source's last day, in one transaction; the rows
    added per table. on_day(day, rows added that day per table) follows each day's load.

    Takes the populate's advisory lock (growths and populates of a schema take turns), then the
    four tables in EXCLUSIVE mode: readers such as an export go on reading the snapshot they
    have, no other session writes. The rows go in with COPY, indexes and foreign keys in place
    (a day is small). Raises SourceDatabaseError if the tables are missing or empty, InvalidSpec
    if a day would not be before today; either way nothing changes.
    """
    with db.connect(purpose="growth") as conn, conn.transaction():
        _populate_lock(db, conn, on_wait)
        db.require_tables(conn)
        db.lock_tables(conn, "EXCLUSIVE", on_wait)
        if not journal.ready(conn):  # a source made before the journal: exports read the days added from it on
            journal.install(conn)
        state = growth_state(db, conn)
        def day_loaded(day_number: int, added: dict[str, int]) -> None:
            if on_day:
                on_day(state.last_day + dt.timedelta(days=day_number), added)

        with _explained_duplicates(db):
            counts = _copy_chunks(conn, fakedata.grow(spec, state), on_progress, day_loaded)
    _analyze(db, "growth")
    return counts


@contextlib.contextmanager
def _explained_duplicates(db: SourceDatabase) -> Iterator[None]:
    """A new card number or e-mail equal to one already in the source (possible only when the source's rows
    were not made by the generator, whose numbering derives both from the ids) fails the growth clearly."""
    try:
        yield
    except psycopg.errors.UniqueViolation as error:
        raise SourceDatabaseError(
            f"growth stopped, nothing added: a new row repeats a unique value already in {db.schema} "
            f"({error.diag.constraint_name}: {error.diag.message_detail}). The source's card numbers or e-mails "
            f"were not all made by the populate's generator; run the populate job to replace the source, then grow it"
        ) from None


def growth_state(db: SourceDatabase, conn: psycopg.Connection) -> SourceState:
    """The source as growth needs it (fakedata.SourceState): the next ids, the client count and the last day
    in one statement; the newest card (its number gives the numbering's offset); then the clients, and the
    cards with their owners, each column as one binary array. Call it with the tables locked."""
    *next_ids, clients, last, newest_card, newest_number = _state_head(conn)
    if clients == 0 or last is None:
        raise SourceDatabaseError(
            f"the source tables in {describe(db.url)} (schema {db.schema}) are empty: there is nothing to grow; "
            f"{POPULATE_FIRST}"
        )
    (client_ids,) = _int_arrays(conn, "SELECT {} FROM associado", ["id"])
    # cartao.id_associado is the owner of the card's account (the contract's invariant, a blocking check):
    # read from cartao alone, without a join of the cards with the accounts (about twice as fast at 300,000).
    card_ids, owners = _int_arrays(conn, "SELECT {} FROM cartao", ["id", "id_associado"])
    offset = None
    if newest_number is not None and len(newest_number) == 16:
        offset = card_number_offset(np.array([newest_card]), np.array([int(newest_number[6:15])]))
    return SourceState(next_id=dict(zip(TABLES, next_ids)), last_day=last, client_ids=client_ids,
                       card_ids=card_ids, card_owners=owners, card_offset=offset)


def _state_head(conn: psycopg.Connection) -> tuple:
    """(next id per table..., clients, last day, newest card's id, its number)."""
    maxima = sql.SQL(", ").join(
        sql.SQL("(SELECT coalesce(max(id), 0) + 1 FROM {})").format(sql.Identifier(name)) for name in TABLES)
    row = one(conn,
        sql.SQL("SELECT {}, (SELECT count(*) FROM associado), greatest("
                "(SELECT max(data_criacao) FROM conta), (SELECT max(data_criacao) FROM cartao), "
                "(SELECT max(data_movimento) FROM movimento))::date").format(maxima))
    newest = conn.execute("SELECT id, num_cartao FROM cartao ORDER BY id DESC LIMIT 1").fetchone() or (None, None)
    return (*row, *newest)


def _int_arrays(conn: psycopg.Connection, query: str, expressions: list[str]) -> list[np.ndarray]:
    """Each bigint expression of query (its select list a {} placeholder) over all its rows, aggregated
    by the server into one binary array (array_send): no per-row cost on this side."""
    columns = sql.SQL(", ").join(sql.SQL("array_send(array_agg({}))").format(sql.SQL(e)) for e in expressions)
    with conn.cursor(binary=True) as cur:
        row = cur.execute(sql.SQL(query).format(columns)).fetchone()
    assert row is not None  # aggregates: one row
    return [_int8_array(value) for value in row]


def _copy_chunks(conn: psycopg.Connection, chunks: Iterable[SourceChunk],
                 on_progress: Callable[[int, float], None] | None = None,
                 on_chunk: Callable[[int, dict[str, int]], None] | None = None) -> dict[str, int]:
    """COPY every chunk in; rows per table. on_chunk(chunk number from 1, its rows per table)."""
    counts, started = dict.fromkeys(TABLES, 0), time.monotonic()
    with conn.cursor() as cur:
        for number, chunk in enumerate(chunks, 1):
            added = _copy_chunk(cur, chunk)
            for name, rows in added.items():
                counts[name] += rows
            if on_chunk:
                on_chunk(number, added)
            if on_progress:
                on_progress(sum(counts.values()), time.monotonic() - started)
    return counts


def _copy_chunk(cur: psycopg.Cursor, chunk: SourceChunk) -> dict[str, int]:
    """COPY the chunk's rows into the four tables, parents first; rows per table."""
    for name, table in chunk.tables().items():
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            sql.Identifier(name), identifiers(table.column_names))
        with cur.copy(statement) as copy:
            copy.write(to_copy_csv(table))
    return {name: table.num_rows for name, table in chunk.tables().items()}


def _populate_lock(db: SourceDatabase, conn: psycopg.Connection, on_wait: Callable[[str], None] | None) -> None:
    """One populate (or growth) at a time per schema, taken before any DDL or table lock: two
    populates that both ran the schema's CREATE INDEX (a SHARE lock) before LOCK TABLE would deadlock."""
    populate_lock = sql.SQL("SELECT pg_advisory_xact_lock(hashtext({}))").format(
        sql.Literal(f"desafio_dagster populate {db.schema}"))
    db.wait_for_lock(conn, populate_lock, "another populate of this schema", on_wait)


def _analyze(db: SourceDatabase, purpose: str) -> None:
    with db.connect(autocommit=True, purpose=purpose) as conn:
        conn.execute(sql.SQL("ANALYZE {}").format(identifiers(TABLES)))


def _secondary_definitions(db: SourceDatabase, conn: psycopg.Connection) -> tuple[list[tuple], list[tuple]]:
    """Foreign keys (table, name, definition) and non-constraint indexes (name, CREATE INDEX ...)."""
    foreign_keys = conn.execute(
        """SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
           FROM pg_constraint c WHERE c.contype = 'f' AND c.connamespace = %s::regnamespace
           AND c.conrelid::regclass::text = ANY(%s) ORDER BY c.conname""",
        (db.schema, list(TABLES)),
    ).fetchall()
    indexes = conn.execute(
        """SELECT i.indexname, i.indexdef FROM pg_indexes i
           WHERE i.schemaname = %s AND i.tablename = ANY(%s)
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                           WHERE c.conname = i.indexname AND c.connamespace = %s::regnamespace)
           ORDER BY i.indexname""",
        (db.schema, list(TABLES), db.schema),
    ).fetchall()
    return foreign_keys, indexes


def _int8_array(data: bytes | None) -> np.ndarray:
    """A bigint[] in Postgres's binary array format (one dimension, no NULLs) as a numpy array."""
    if data is None or int.from_bytes(data[0:4], "big") == 0:  # array_agg of no rows, or an empty array
        return np.empty(0, np.int64)
    count = int.from_bytes(data[12:16], "big")  # header: ndim, has-nulls flag, element oid, then size, lower bound
    return np.frombuffer(data, np.dtype([("length", ">i4"), ("value", ">i8")]), count=count, offset=20)["value"].astype(np.int64)
