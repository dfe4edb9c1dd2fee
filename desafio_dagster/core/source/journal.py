"""The change journal of the source (sql/change_journal.sql): which clients changed since an export's snapshot,
at a cost that grows with the changes, not with the source. Pure: no Dagster.

Statement triggers on the four tables write, in the writer's own transaction, the keys each statement
touched (clients, cards, accounts: the export looks the cards' and accounts' clients up in its own snapshot)
and that transaction's id. An export records the snapshot it read (`pg_current_snapshot()`) with the
version it publishes; the next export's changed clients are the journal's rows that snapshot did not see
(`pg_visible_in_snapshot`), read in its own snapshot: exact whatever the order in which writers commit. Once a
version is published, the rows its snapshot saw are removed, and the journal's horizon says so: a version
whose snapshot does not see every removed row is followed by a full computation of the figures, as is a
source whose journal is missing or has a trigger disabled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

import numpy as np
import psycopg
from psycopg import sql

from desafio_dagster.core.source.fakedata import TABLES
from desafio_dagster.core.source.pg import one

JOURNAL_SQL = resources.files("desafio_dagster").joinpath("sql/change_journal.sql").read_text()
_EVENTS = ("insert", "update", "delete", "truncate")
TRIGGERS = tuple(f"{table}_journal_{event}" for table in TABLES for event in _EVENTS)


@dataclass(frozen=True)
class Changes:
    """The clients changed since a snapshot: every client (a populate replaced the tables), or these ids."""

    everything: bool
    clients: np.ndarray  # int64 ids, sorted; empty when everything

    def __len__(self) -> int:
        return len(self.clients)


def install(conn: psycopg.Connection) -> None:
    """Create the journal, its triggers and horizon in the connection's schema (idempotent)."""
    conn.execute(JOURNAL_SQL)


def ready(conn: psycopg.Connection) -> bool:
    """Whether every trigger of the journal exists and always fires (in conn's snapshot: within an export's
    transaction, as they were when its snapshot was taken). A trigger that does not fire in a session with
    session_replication_role = replica (a restore's, a logical replica's) counts as missing."""
    enabled = one(conn,
        """SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
           WHERE c.relnamespace = current_schema()::regnamespace AND t.tgname = ANY(%s) AND t.tgenabled = 'A'""",
        (list(TRIGGERS),))[0]
    return enabled == len(TRIGGERS)


def current_snapshot(conn: psycopg.Connection) -> str:
    """The snapshot conn's transaction reads, as text: what a later export asks changes_since about."""
    return one(conn, "SELECT pg_current_snapshot()::text")[0]


# Whether snapshot %(s)s sees every transaction the horizon's snapshot saw (true without a horizon).
_SEES_HORIZON = """SELECT coalesce(bool_and(pg_snapshot_xmax(h.snapshot) <= pg_snapshot_xmax(%(s)s::pg_snapshot) AND NOT EXISTS (
    SELECT 1 FROM pg_snapshot_xip(%(s)s::pg_snapshot) x
    WHERE x < pg_snapshot_xmax(h.snapshot) AND pg_visible_in_snapshot(x, h.snapshot))), true)
FROM change_journal_horizon h"""

# The changes a snapshot did not see, each row's clients looked up in conn's own snapshot: the clients it names,
# and those of the cards and accounts it names (a card counts for its client and its account's). Cards and
# accounts are looked up by key (= ANY), not joined: the planner merge-joined the whole of cartao and conta,
# 1.4 s at 1M clients here for 10k changed cards, against 0.2 s.
_CHANGED_CLIENTS = """
WITH changed AS (SELECT client_id, card_id, account_id FROM change_journal
                 WHERE NOT pg_visible_in_snapshot(xid, %(since)s::pg_snapshot)),
     cards AS (SELECT id_associado, id_conta FROM cartao
               WHERE id = ANY (ARRAY(SELECT card_id FROM changed WHERE card_id IS NOT NULL)))
SELECT coalesce(bool_or(client_id IS NULL AND card_id IS NULL AND account_id IS NULL), false),
       (SELECT array_agg(id ORDER BY id) FROM (
            SELECT client_id FROM changed WHERE client_id IS NOT NULL
            UNION SELECT id_associado FROM cards
            UNION SELECT id_associado FROM conta WHERE id = ANY (ARRAY(
                SELECT id_conta FROM cards UNION SELECT account_id FROM changed WHERE account_id IS NOT NULL))) AS ids (id))
FROM changed"""


def changes_since(conn: psycopg.Connection, snapshot: str) -> Changes | None:
    """The clients changed between snapshot and conn's own (call it in a REPEATABLE READ transaction), or None
    if the journal cannot tell: it is not ready, or rows that snapshot did not see were removed already."""
    if not ready(conn):
        return None
    if not one(conn, _SEES_HORIZON, {"s": snapshot})[0]:
        return None
    everything, ids = one(conn, _CHANGED_CLIENTS, {"since": snapshot})
    return Changes(bool(everything), np.array([] if everything else ids or [], np.int64))


def forget(conn: psycopg.Connection, snapshot: str) -> int:
    """Remove the rows a published version's snapshot saw, and move the horizon there; only forward: a
    snapshot that does not see everything the horizon's saw (an older export publishing late) removes nothing.
    Rows removed. Its own transaction."""
    with conn.transaction():
        conn.execute("LOCK TABLE change_journal_horizon IN EXCLUSIVE MODE")
        if not one(conn, _SEES_HORIZON, {"s": snapshot})[0]:
            return 0
        conn.execute("""INSERT INTO change_journal_horizon (snapshot) VALUES (%s::pg_snapshot)
                        ON CONFLICT (one) DO UPDATE SET snapshot = excluded.snapshot""", (snapshot,))
        return conn.execute("DELETE FROM change_journal WHERE pg_visible_in_snapshot(xid, %s::pg_snapshot)",
                            (snapshot,)).rowcount


@contextlib.contextmanager
def paused_for_load(conn: psycopg.Connection) -> Iterator[None]:
    """For a load that replaces the tables (TRUNCATE, then COPY) in conn's transaction, with the tables locked:
    the row triggers stay off during the load, so the journal records only the TRUNCATE's 'every client'."""
    toggles = [(table, f"{table}_journal_{event}") for table in TABLES for event in _EVENTS[:3]]
    for table, trigger in toggles:
        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(sql.Identifier(table), sql.Identifier(trigger)))
    yield
    for table, trigger in toggles:
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(sql.Identifier(table), sql.Identifier(trigger)))
