"""The export's COPY reader (extract._CopyOut, read from libpq itself) against a real server: the same values a
query returns, Postgres's errors as psycopg raises them, and a connection that runs its next statement after
an error or a read stopped early."""

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from desafio_dagster.core.export.extract import _copied_batches

SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])
# Quotes, commas, a newline inside a value, accents: whatever Postgres's CSV quoting makes of them. About
# 20 MB in all: several of the reader's 8 MB blocks, and many network reads.
ROWS = """SELECT g AS id, CASE g % 4 WHEN 0 THEN 'plain ' || g WHEN 1 THEN 'a "quoted", comma ' || g
                                WHEN 2 THEN E'two\\nlines ' || g ELSE 'ação ' || repeat('x', g % 50) END AS text
          FROM generate_series(1, 400000) g"""


def copied(conn: psycopg.Connection, query: str) -> pa.Table:
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(sql.SQL(query))
    return pa.Table.from_batches(list(_copied_batches(conn, statement, SCHEMA)), SCHEMA)


def test_a_copy_holds_what_the_query_returns(database_url):
    with psycopg.connect(database_url) as conn:
        table = copied(conn, ROWS)
        expected = conn.execute(ROWS).fetchall()
        assert table.num_rows == len(expected) == 400_000
        assert list(zip(table["id"].to_pylist(), table["text"].to_pylist())) == expected
        assert copied(conn, "SELECT 1::bigint AS id, 'x' AS text WHERE false").num_rows == 0


@pytest.mark.parametrize("query, error", [
    ("SELECT g::bigint AS id, (1 / (300000 - g))::text AS text FROM generate_series(1, 400000) g",
     psycopg.errors.DivisionByZero),  # after many rows came
    ("SELECT id, text FROM no_such_table", psycopg.errors.UndefinedTable),  # before any
])
def test_an_error_is_raised_as_psycopg_raises_it_and_the_connection_goes_on(database_url, query, error):
    with psycopg.connect(database_url) as conn:
        with pytest.raises(error) as raised:
            copied(conn, query)
        assert raised.value.diag.message_primary and raised.value.sqlstate == error.sqlstate
        conn.rollback()
        assert conn.execute("SELECT 42").fetchone() == (42,)


def test_a_read_stopped_early_leaves_the_connection_ready(database_url):
    with psycopg.connect(database_url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # as the export's snapshot does
        [(snapshot,)] = conn.execute("SELECT pg_export_snapshot()").fetchall()
        many = ROWS.replace("400000", "3000000")  # about 90 MB: far more than Arrow reads ahead
        batches = _copied_batches(conn, sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(sql.SQL(many)), SCHEMA)
        assert next(batches).num_rows < 3_000_000
        batches.close()  # the rest is read and dropped
        assert conn.execute("SELECT 43").fetchone() == (43,)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        [(still,)] = conn.execute("SELECT pg_export_snapshot()").fetchall()
        assert still.split("-")[:2] == snapshot.split("-")[:2], "the same transaction, still open"
