"""The source, read by the Spark tasks themselves from one snapshot. Pure: no Dagster.

The export's own transaction (`ExportedSnapshot`, on the driver) waits for a populate in progress,
takes ACCESS SHARE on the four tables, exports its snapshot (`pg_export_snapshot()`), computes the
audit figures and the fingerprint in it, and stays open until the Spark job has finished.

Each Spark task reads one range of clients from all four tables (`read_clients`): it opens its own
connection, imports that snapshot (`SET TRANSACTION SNAPSHOT`, REPEATABLE READ, read only), locks the
tables NOWAIT and streams its clients' rows of each table with `COPY ... TO STDOUT`, parsed into Arrow
with exact types. Nothing the size of the client set is broadcast or held on the driver. As with pg_dump's workers, NOWAIT keeps a task from queueing behind a populate
that itself waits for the exporter: the task fails at once and the step retries from a fresh
snapshot. No JDBC driver, no staging folder, nothing shared between driver and executors but the
options of the read (no password: libpq takes it from PGPASSWORD, set as an executor environment
variable, which Spark redacts).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from desafio_dagster.core.errors import TransientError, first_line
from desafio_dagster.core.export.audit import expected_figures
from desafio_dagster.core.output.layout import is_sorted
from desafio_dagster.core.output.version import FIGURES_SCHEMA
from desafio_dagster.core.source import journal
from desafio_dagster.core.source.pg import one
from desafio_dagster.core.source.source_db import (
    DEFAULT_STALL_TIMEOUT,
    POPULATE_FIRST,
    TABLES,
    SourceDatabase,
    SourceDatabaseError,
    describe,
    identifiers,
    row_hash,
)

_TIMESTAMP = pa.timestamp("us")
SOURCE_SCHEMAS = {
    "associado": pa.schema([("id", pa.int64()), ("nome", pa.string()), ("sobrenome", pa.string()),
                            ("idade", pa.int32()), ("email", pa.string())]),
    "conta": pa.schema([("id", pa.int64()), ("tipo", pa.string()), ("data_criacao", _TIMESTAMP),
                        ("id_associado", pa.int64())]),
    "cartao": pa.schema([("id", pa.int64()), ("num_cartao", pa.string()), ("nom_impresso", pa.string()),
                         ("data_criacao", _TIMESTAMP), ("id_conta", pa.int64()), ("id_associado", pa.int64())]),
    "movimento": pa.schema([("id", pa.int64()), ("vlr_transacao", pa.decimal128(10, 2)), ("des_transacao", pa.string()),
                            ("data_movimento", _TIMESTAMP), ("id_cartao", pa.int64())]),
}
# Each table's rows of a set of clients (the client is associado.id).
_CLIENTS_ROWS = {
    "associado": "id {clients}",
    "conta": "id_associado {clients}",
    "cartao": "id_associado {clients}",
    "movimento": "id_cartao IN (SELECT id FROM cartao WHERE id_associado {clients})",
}
# What each client's file must hold, from the tables themselves rather than the flat view's join, and
# the client's fingerprint: the XOR of the row_hash (id and row version) of every row of the client in
# the four tables, along the output's join path (a card counts for its account's client). Any insert,
# update or delete of one of those rows changes it (but for a 2^-64 chance). Hashing the rows' text
# instead would also ignore updates that change nothing, but took 11.2 s instead of 5.7 s at 10M
# movements here (3.2 s without fingerprints). Of every client, or of the clients in {clients} (a
# condition on a client id, e.g. "= ANY(...)"): what the change journal names after a change.
# Cards are grouped straight by client (1M clients: 11.8 s here; by account, then by client, 13.4 s).
_CLIENT_FIGURES = f"""
WITH per_card AS (
    SELECT id_cartao, count(*) AS movements, sum(vlr_transacao) AS total, bit_xor({row_hash("movimento")}) AS hash
    FROM movimento {{movements}} GROUP BY id_cartao),
per_client AS (
    SELECT c.id_associado, sum(p.movements) AS movements, sum(p.total) AS total,
           bit_xor({row_hash("cartao", "k.")} # coalesce(p.hash, 0)) AS hash
    FROM cartao k JOIN conta c ON c.id = k.id_conta LEFT JOIN per_card p ON p.id_cartao = k.id {{cards}}
    GROUP BY c.id_associado),
accounts AS (SELECT id_associado, bit_xor({row_hash("conta")}) AS hash FROM conta {{accounts}} GROUP BY id_associado)
SELECT a.id, a.nome, a.sobrenome, coalesce(r.movements, 0)::bigint, coalesce(r.total, 0),
       {row_hash("associado", "a.")} # coalesce(r.hash, 0) # coalesce(s.hash, 0)
FROM associado a LEFT JOIN per_client r ON r.id_associado = a.id LEFT JOIN accounts s ON s.id_associado = a.id
{{clients}} ORDER BY a.id"""
_OF_CLIENTS = {
    "movements": "WHERE id_cartao IN (SELECT k.id FROM cartao k JOIN conta c ON c.id = k.id_conta WHERE c.id_associado {})",
    "cards": "WHERE c.id_associado {}", "accounts": "WHERE id_associado {}", "clients": "WHERE a.id {}"}
ROWS_PER_PARTITION = 500_000  # movements one Spark task reads and writes, about
# A client's file costs a task about as much as this many movements: creating, renaming and linking it took about
# 130 µs a file against 5.7 µs a movement, summed over the tasks (bench_scale.py, full exports at 1M and 100k).
FILE_WEIGHT = 20
# A task's start (a Python worker, a connection, the snapshot imported) is worth splitting the work for past
# this weight (movements + FILE_WEIGHT per file): about 0.3 s of a task's work.
MIN_TASK_WORK = 50_000
_BLOCK_BYTES = 8 << 20
# Past this share of the clients changed, the figures of every client cost less than those of the changed ones.
_MOST_CHANGED = 0.3


_FIGURES_SCHEMA = pa.schema([("id", pa.int64()), ("nome", pa.string()), ("sobrenome", pa.string()),
                             ("movements", pa.int64()), ("total", pa.decimal128(18, 2)), ("fingerprint", pa.int64())])


def client_figures(conn: psycopg.Connection, clients: np.ndarray | None = None) -> pa.Table:
    """Each client's figures (version.FIGURES_SCHEMA), of every client or of those ids, from the tables in conn's
    snapshot: _CLIENT_FIGURES streamed with COPY and parsed by Arrow (a million rows in a few seconds, where
    fetching them as Python tuples took 11 s)."""
    if clients is not None and not len(clients):
        return expected_figures(_FIGURES_SCHEMA.empty_table())
    parts: dict[str, sql.Composable]
    if clients is None:
        parts = dict.fromkeys(_OF_CLIENTS, sql.SQL(""))
    else:
        condition = sql.SQL("= ANY({}::bigint[])").format(sql.Literal(clients.tolist()))
        parts = {name: sql.SQL(text).format(condition) for name, text in _OF_CLIENTS.items()}
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(sql.SQL(_CLIENT_FIGURES).format(**parts))
    return expected_figures(pa.Table.from_batches(list(_copied_batches(conn, statement, _FIGURES_SCHEMA)), _FIGURES_SCHEMA))


def _updated(published: pa.Table, changes: journal.Changes, fresh: pa.Table) -> pa.Table:
    """The published figures with the changed clients' replaced by fresh ones (a client in changes but not in
    fresh is gone)."""
    kept = published.select(FIGURES_SCHEMA.names).cast(FIGURES_SCHEMA)
    if not len(changes) and is_sorted(kept["client_id"]):  # as published: no copy and sort of a million rows (0.5 s)
        return kept
    kept = kept.filter(pc.invert(pc.is_in(kept["client_id"], value_set=pa.array(changes.clients))))
    return pa.concat_tables([kept, fresh]).sort_by("client_id")


@dataclass(frozen=True)
class PublishedFigures:
    """What the published version recorded of the source it was exported from: the snapshot (journal.
    current_snapshot) and every client's figures."""

    version: str  # the published version, in its store
    snapshot: str
    clients: pa.Table  # version.FIGURES_SCHEMA: its _snapshot.arrow


class SourceReadError(TransientError):
    """A task could not read the export's snapshot (a populate waits for the tables, the snapshot is
    gone, the connection failed): the step starts again from a fresh snapshot."""


@dataclass(frozen=True)
class Clients:
    """The clients one task reads: every client from first to last, or only `ids` among them."""

    first: int
    last: int
    ids: tuple[int, ...] | None = None

    def condition(self) -> sql.Composable:
        if self.ids is None:
            return sql.SQL("BETWEEN {} AND {}").format(sql.Literal(self.first), sql.Literal(self.last))
        return sql.SQL("= ANY({}::bigint[])").format(sql.Literal(list(self.ids)))


@dataclass(frozen=True)
class Snapshot:
    """What one export reads, all from one transaction."""

    id: str  # pg_export_snapshot(): the tasks import it
    counts: dict[str, int]  # rows per table
    clients: pa.Table  # what each client's file must hold (version.FIGURES_SCHEMA), by client id
    fingerprint: dict[str, list[int]]  # see SourceDatabase.fingerprint; {} where the journal tells changes
    figures_seconds: float  # the time the figures took to compute
    source: str | None = None  # journal.current_snapshot, where the source keeps a change journal
    changed: int | None = None  # clients whose figures were computed from the journal's changes; None: all were

    def client_ranges(self, parts: int, only: pa.Array | None = None) -> list[Clients]:
        """At most `parts` ranges of client ids in order, about equal in work (a client weighs its movements
        and FILE_WEIGHT for its file); of the clients in `only`, if given."""
        figures = self._of(only)
        ids = figures["client_id"].to_numpy()
        if not len(ids):
            return []
        done = np.cumsum(figures["rows"].to_numpy() + FILE_WEIGHT)
        targets = done[-1] / max(parts, 1) * np.arange(1, max(parts, 1) + 1)
        # Range k ends at the first client whose running weight reaches k shares, and after range k-1's end.
        steps = np.arange(len(targets))
        ends = np.maximum.accumulate(np.searchsorted(done, targets, side="left") - steps) + steps
        ends = np.r_[ends[ends < len(ids) - 1], len(ids) - 1]
        starts = np.r_[0, ends[:-1] + 1]
        return [Clients(int(ids[start]), int(ids[end]), None if only is None else tuple(ids[start : end + 1].tolist()))
                for start, end in zip(starts.tolist(), ends.tolist())]

    def movements(self, only: pa.Array | None = None) -> int:
        return pc.sum(self._of(only)["rows"]).as_py() or 0

    def _of(self, only: pa.Array | None) -> pa.Table:
        """The figures of the clients in only, or of every client."""
        return self.clients if only is None else self.clients.filter(pc.is_in(self.clients["client_id"], value_set=only))


def partitions_for(movements: int, files: int, task_slots: int, max_connections: int = 0) -> int:
    """Partitions sized by the data: ROWS_PER_PARTITION movements each, about, and one per task slot at least
    when the work (movements + FILE_WEIGHT per file) is worth that many tasks (MIN_TASK_WORK each): an
    incremental export's 10,000 files at 1M clients are written by both cores, not by one task. Each running task
    holds one connection, so at most min(task slots, partitions) are open at once; with max_connections
    below the task slots, the partitions are fewer (and larger) instead."""
    work = movements + FILE_WEIGHT * files
    parts = max(1, math.ceil(movements / ROWS_PER_PARTITION), min(task_slots, work // MIN_TASK_WORK))
    if 0 < max_connections < task_slots:
        parts = min(parts, max_connections)
    return parts


class ExportedSnapshot:
    """The export's transaction, open from `open` to `close`: while it is open, its snapshot can be
    imported by the tasks (the tables stay share-locked, so no populate can replace them meanwhile)."""

    def __init__(self, db: SourceDatabase, conn: psycopg.Connection, snapshot: Snapshot, closing: contextlib.ExitStack):
        self.db, self._conn, self.snapshot, self._closing = db, conn, snapshot, closing

    @classmethod
    def open(cls, db: SourceDatabase, on_wait: Callable[[str], None] | None = None,
             published: PublishedFigures | None = None) -> ExportedSnapshot:
        """published: what the published version recorded of its source; with it, and a change journal that
        covers the changes since, only the changed clients' figures are computed."""
        with contextlib.ExitStack() as closing:
            conn = closing.enter_context(db.connect(purpose="export"))
            db.require_tables(conn)
            # The session idles in its transaction while Spark reads: it must not be ended for that.
            conn.execute("SET idle_in_transaction_session_timeout = 0")
            conn.commit()
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # Wait for a populate in progress before the snapshot is taken (at the first query),
            # so the snapshot is the old database or the new one, never empty tables.
            db.lock_tables(conn, "ACCESS SHARE", on_wait)
            started = time.monotonic()
            snapshot_id = one(conn, "SELECT pg_export_snapshot()")[0]
            source = journal.current_snapshot(conn) if journal.ready(conn) else None
            changes = journal.changes_since(conn, published.snapshot) if source and published else None
            if published and changes is not None and not changes.everything \
                    and len(changes) <= _MOST_CHANGED * len(published.clients):
                clients = _updated(published.clients, changes, client_figures(conn, changes.clients))
                fingerprint, changed = {}, len(changes)
            else:
                clients, changed = client_figures(conn), None
                fingerprint = {} if source else db.fingerprint(conn)  # without a journal, the checks compare these
            if not len(clients):
                raise SourceDatabaseError(
                    f"the source database {db} has no clients (associado is empty): {POPULATE_FIRST}")
            if fingerprint:
                counts = {table: rows for table, (rows, _, _) in fingerprint.items()}
            else:
                accounts, cards = one(conn, "SELECT (SELECT count(*) FROM conta), (SELECT count(*) FROM cartao)")
                counts = {"associado": len(clients), "conta": accounts, "cartao": cards,
                          "movimento": pc.sum(clients["rows"]).as_py()}  # every movement has a card, an account, a client
            snapshot = Snapshot(snapshot_id, counts, clients, fingerprint, time.monotonic() - started, source, changed)
            return cls(db, conn, snapshot, closing.pop_all())  # open until close()

    def check_connections(self, parts: int, task_slots: int) -> None:
        """Fail clearly, before any task connects, if the server has fewer free connections than the
        tasks need at once: one per running task (read_clients), at most one per task slot."""
        wanted = min(parts, task_slots)
        limit, reserved, used = one(self._conn,
            """SELECT current_setting('max_connections')::int,
                      current_setting('superuser_reserved_connections')::int
                      + coalesce(current_setting('reserved_connections', true)::int, 0),
                      (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')""")
        free = limit - reserved - used
        if wanted > free:
            raise SourceDatabaseError(
                f"the export's Spark tasks would open up to {wanted} connections at once to {describe(self.db.url)}, "
                f"but the server has {max(free, 0)} free (max_connections={limit}, {used} in use): raise "
                f"max_connections, or set the postgres resource's max_export_connections to {max(free, 1)} or less")

    def read_options(self) -> dict[str, str]:
        """What a task needs to read this snapshot: where and how to connect, without the password
        (libpq takes it from PGPASSWORD in the task's environment)."""
        params = {k: str(v) for k, v in conninfo_to_dict(self.db.url).items() if k != "password" and v is not None}
        return {"conninfo": make_conninfo(**params), "schema": self.db.schema, "snapshot": self.snapshot.id,
                "stall_timeout": str(self.db.stall_timeout)}

    def __enter__(self) -> ExportedSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the transaction: the snapshot can no longer be imported, and a waiting populate proceeds. A
        connection lost meanwhile (a server restarted) ended it already: a read-only transaction, nothing lost."""
        with contextlib.suppress(psycopg.OperationalError):
            self._closing.close()

    def forget_seen_changes(self) -> int:
        """Once a version of this snapshot is published: remove the journal's rows it saw (rows removed)."""
        if self.snapshot.source is None:
            return 0
        with self.db.connect(autocommit=True, purpose="export") as conn:
            return journal.forget(conn, self.snapshot.source)


@contextlib.contextmanager
def snapshot_connection(options: dict[str, str]) -> Iterator[psycopg.Connection]:
    """A connection whose transaction reads the export's snapshot (ExportedSnapshot.read_options), the
    tables share-locked NOWAIT. Runs in a Spark task."""
    with contextlib.ExitStack() as stack:
        try:
            conn = stack.enter_context(SourceDatabase(options["conninfo"], options["schema"]).connect(purpose="export task"))
        except SourceDatabaseError as error:  # refused, unreachable, or the login failed
            raise SourceReadError(f"a Spark task: {error} (the executors must reach the server; the password "
                                  f"reaches them as PGPASSWORD)") from None
        try:
            conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(options["snapshot"])))
            conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE NOWAIT").format(identifiers(TABLES)))
        except psycopg.errors.LockNotAvailable:
            raise SourceReadError("a populate is waiting to replace the source tables: the export gives way and "
                                  "starts again from a fresh snapshot once the populate is done") from None
        except psycopg.errors.InvalidParameterValue as error:
            raise SourceReadError(f"the export's snapshot is gone ({first_line(error)}): its transaction ended "
                                  f"before the Spark job did") from None
        yield conn


class StallWatch:
    """Shuts a connection's socket down once no chunk came for `seconds`: libpq has no read timeout, so a network
    that stalls (a connection kept open, nothing passed) would block the read forever. The reader counts its
    chunks (chunks += 1, the cheapest thing on its per-row path); the watch's thread samples the count."""

    def __init__(self, conn: psycopg.Connection, seconds: float):
        # A socket of its own on the connection's (a dup): never a descriptor that libpq closed and the process reused.
        self.sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        self.seconds, self.chunks, self.stalled = seconds, 0, False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.sock.close()

    def _watch(self) -> None:
        seen, since = self.chunks, time.monotonic()
        while not self._done.wait(min(1.0, self.seconds / 4)):
            if self.chunks != seen:
                seen, since = self.chunks, time.monotonic()
            elif time.monotonic() - since > self.seconds:
                self.stalled = True
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns: the connection is lost
                return


def copy_rows(conn: psycopg.Connection, table: str, clients: Clients | None,
              watch: StallWatch | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of table (of those clients, or all) in conn's snapshot, in Arrow batches of SOURCE_SCHEMAS' types."""
    schema = SOURCE_SCHEMAS[table]
    where: sql.Composable = sql.SQL("")
    if clients is not None:
        where = sql.SQL(" WHERE " + _CLIENTS_ROWS[table]).format(clients=clients.condition())
    statement = sql.SQL("COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT csv)").format(
        identifiers(schema.names), sql.Identifier(table), where)
    try:
        yield from _copied_batches(conn, statement, schema, watch)
    except psycopg.OperationalError as error:  # the server's reason when it came (libpq may put it on any line)
        if watch and watch.stalled:
            raise SourceReadError(f"no data from Postgres for {watch.seconds:.0f} s in a Spark task reading {table} "
                                  f"(a stalled network): the export starts again from a fresh snapshot; if the server "
                                  f"is only slow, raise the postgres resource's stall_timeout_seconds") from None
        raise SourceReadError(f"connection to Postgres lost in a Spark task reading {table}: "
                              f"{error.diag.message_primary or first_line(error)}") from None


def _copied_batches(conn: psycopg.Connection, statement: sql.Composed, schema: pa.Schema,
                    watch: StallWatch | None = None) -> Iterator[pa.RecordBatch]:
    """The CSV of a `COPY ... TO STDOUT (FORMAT csv)`, streamed into Arrow batches of exactly schema's types."""
    with _CopyOut(conn, statement, watch) as copied:
        stream = io.BufferedReader(copied, _BLOCK_BYTES)
        if not stream.peek(1):
            return
        yield from pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(column_names=schema.names, block_size=_BLOCK_BYTES),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(column_types=schema, strings_can_be_null=False,
                                                  quoted_strings_can_be_null=False),
        )


def read_clients(options: dict[str, str], clients: Clients | None) -> dict[str, pa.Table]:
    """The four tables' rows of those clients (or all), as the export's snapshot holds them: one
    connection, one COPY per table. Runs in a Spark task."""
    stall_timeout = float(options.get("stall_timeout", DEFAULT_STALL_TIMEOUT))
    with snapshot_connection(options) as conn, StallWatch(conn, stall_timeout) as watch:
        return {table: pa.Table.from_batches(list(copy_rows(conn, table, clients, watch)), schema)
                for table, schema in SOURCE_SCHEMAS.items()}


class _CopyOut(io.RawIOBase):
    """A readable file over a `COPY ... TO STDOUT` run on conn, read from libpq itself (psycopg.pq): the rows libpq
    holds are copied in one loop, where psycopg's Copy takes a generator round per row (a million rows of movimento
    with Arrow's parsing: 0.9 s against 2.0 here). It waits on the socket with select, so a StallWatch's shutdown
    ends the wait; closed before the end, it reads the rest, so the connection can run its next statement. Arrow's
    reader reads ahead from a thread of its own: a lock keeps that thread and close() from using libpq at once.
    The COPY runs in conn's transaction as it stands (the export's snapshot): unlike psycopg's own copy, it
    begins none."""

    def __init__(self, conn: psycopg.Connection, statement: sql.Composable, watch: StallWatch | None = None) -> None:
        self._pgconn, self._encoding = conn.pgconn, conn.info.encoding
        self._pending = memoryview(b"")
        self._watch = watch
        self._done = False
        self._lock = threading.Lock()
        self._pgconn.send_query(statement.as_bytes(conn))
        while self._pgconn.flush():
            select.select([], [self._pgconn.socket], [])
        if (result := self._result()).status != pq.ExecStatus.COPY_OUT:
            self._done = True
            self._raise(result)  # once libpq is idle again

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._lock:
            return self._fill(buffer)

    def _fill(self, buffer: Any) -> int:
        size, at, pending = len(buffer), 0, self._pending
        if self._watch is not None:
            self._watch.chunks += 1
        while at < size:
            if not pending:
                if self._done or not (pending := self._row()):
                    break
            n = min(size - at, len(pending))
            buffer[at : at + n] = pending[:n]
            pending, at = pending[n:], at + n
        self._pending = pending
        return at

    def _row(self) -> memoryview:
        """The next row, or empty once the COPY is complete."""
        while True:
            nbytes, data = self._pgconn.get_copy_data(1)
            if nbytes > 0:
                return data
            if nbytes < -1:
                raise psycopg.OperationalError(f"receiving copy data failed: {pq.error_message(self._pgconn)}")
            if nbytes == -1:
                self._done = True
                if (result := self._result()).status != pq.ExecStatus.COMMAND_OK:
                    self._raise(result)
                self._idle()
                return memoryview(b"")
            self._wait()

    def _next_result(self) -> pq.abc.PGresult | None:
        """The statement's next result once libpq has it whole; None once there are no more."""
        while self._pgconn.is_busy():
            self._wait()
        return self._pgconn.get_result()

    def _result(self) -> pq.abc.PGresult:
        if (result := self._next_result()) is None:
            raise psycopg.OperationalError(f"no result: {pq.error_message(self._pgconn)}")
        return result

    def _wait(self) -> None:
        select.select([self._pgconn.socket], [], [])
        self._pgconn.consume_input()  # raises OperationalError where the connection is lost
        if self._watch is not None:
            self._watch.chunks += 1

    def _idle(self) -> None:
        """The statement's remaining results read: libpq takes the next statement."""
        while self._next_result() is not None:
            pass

    def _raise(self, result: pq.abc.PGresult) -> None:
        with contextlib.suppress(psycopg.OperationalError):  # a connection lost meanwhile: the server's reason first
            self._idle()
        sqlstate = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
        try:
            error = psycopg.errors.lookup(sqlstate)
        except KeyError:
            error = psycopg.DatabaseError
        raise error(pq.error_message(result, self._encoding), info=result, encoding=self._encoding)

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(psycopg.Error, OSError):
                while not self._done and self._row():  # the rest, unread: the connection is ready for its next statement
                    pass
            self._done = True  # a read ahead that comes later touches libpq no more
        super().close()
