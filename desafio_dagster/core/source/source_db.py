"""The operational Postgres database: connection, locks, schema, row counts, fingerprints and preview (its
snapshot replacement and growth: loading.py). Pure: no Dagster.

Identifiers from configuration are validated and quoted with psycopg's `sql`
module; values always travel as parameters. URLs are redacted before they reach
a message.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources

import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from desafio_dagster.core.errors import DesafioError, TransientError
from desafio_dagster.core.output.layout import masked
from desafio_dagster.core.source import journal
from desafio_dagster.core.source.fakedata import TABLES
from desafio_dagster.core.source.pg import one

SCHEMA_SQL = resources.files("desafio_dagster").joinpath("sql/schema.sql").read_text()
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DDL_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+) \((.*?)^\);", re.M | re.S)
_DDL_COLUMN = re.compile(r"(\w+)\s+(\w+(?:\([\d,]+\))?)\s*(.*?),?")


@dataclass(frozen=True)
class DdlColumn:
    name: str
    type: str  # as declared, e.g. "varchar(100)"
    constraints: str  # as declared, e.g. "NOT NULL REFERENCES associado (id)"


def ddl_columns() -> dict[str, list[DdlColumn]]:
    """Each table's columns as sql/schema.sql declares them (one column a line), in order."""
    def column(line: str) -> DdlColumn:
        declared = _DDL_COLUMN.fullmatch(line.strip())
        if declared is None:
            raise ValueError(f"sql/schema.sql: a column line this parser does not read: {line!r}")
        return DdlColumn(*declared.groups())

    return {table: [column(line) for line in body.strip().splitlines()] for table, body in _DDL_TABLE.findall(SCHEMA_SQL)}


class SourceDatabaseError(DesafioError):
    """A problem with the source database, told with what to do about it."""


class SourceUnavailable(SourceDatabaseError, TransientError):
    """The server refused or dropped the connection: worth another attempt."""


def connection_lost(error: psycopg.Error) -> bool:
    """A refused, dropped or terminated connection (libpq errors carry no SQLSTATE), as opposed
    to the server refusing a statement or the credentials."""
    return isinstance(error, psycopg.OperationalError) and (
        error.sqlstate is None or error.sqlstate.startswith(("08", "57P"))
    )


def row_hash(table: str, alias: str = "") -> str:
    """SQL for a 64-bit hash of a row's id and row version (xmin: the transaction that inserted or last
    updated it), seeded per table, so equal ids of two tables never hash alike. alias: "m." or ""."""
    return f"hashint8extended({alias}id, {alias}xmin::text::bigint * 4 + {TABLES.index(table)})"


# The fix for a source with no tables or no rows yet.
POPULATE_FIRST = "run the populate job first (make run, or dagster job execute -m desafio_dagster.definitions -j populate)"
DEFAULT_LOCK_TIMEOUT = 600.0  # seconds a populate or an export waits for another one
DEFAULT_STALL_TIMEOUT = 300.0  # seconds an export's task waits for the next bytes of its read (extract.StallWatch)


def validate_identifier(name: str, what: str = "DESAFIO_SCHEMA") -> str:
    if not _IDENTIFIER.match(name or ""):
        raise SourceDatabaseError(
            f"{what}={name!r} is not a valid schema name: use lower-case letters, digits and "
            f"underscores, starting with a letter or underscore, at most 63 characters"
        )
    return name


def identifiers(names: Iterable[str]) -> sql.Composed:
    """Quoted identifiers, comma-separated."""
    return sql.SQL(", ").join(map(sql.Identifier, names))


def redact(url: str) -> str:
    """The URL with its password replaced by ***, in URL or key=value form."""
    url = re.sub(r"(://[^:/@?#]*:)[^/?#]*@", r"\1***@", url)  # up to the last @: an unencoded @ stays hidden
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)


def describe(url: str) -> str:
    """'host:port/dbname' of a connection URL, never its password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return redact(url)
    host = params.get("host") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or 'postgres'}"


def _raw_at_in_user_info(url: str) -> bool:
    """A URL whose user name or password holds an unencoded '@': libpq would take part
    of the password for the host name, and echo it in its errors."""
    return "://" in url and url.split("://", 1)[1].split("/", 1)[0].count("@") > 1


def _password(url: str) -> str | None:
    with contextlib.suppress(psycopg.ProgrammingError):
        return str(conninfo_to_dict(url).get("password") or "") or None
    return None


class SourceDatabase:
    """The four tables of the contract in one schema of one Postgres database."""

    def __init__(self, url: str, schema: str = "sicooperative", lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
                 stall_timeout: float = DEFAULT_STALL_TIMEOUT):
        self.url = url
        self.schema = validate_identifier(schema)
        self.lock_timeout, self.stall_timeout = lock_timeout, stall_timeout

    def __repr__(self) -> str:
        return f"SourceDatabase({describe(self.url)}, schema={self.schema})"

    def task_environment(self) -> dict[str, str]:
        """What a Spark task needs besides the connection options to log in: the password (from the
        URL, else the PGPASSWORD this process has), as libpq's PGPASSWORD."""
        password = _password(self.url) or os.environ.get("PGPASSWORD")
        return {"PGPASSWORD": password} if password else {}

    @contextlib.contextmanager
    def connect(self, autocommit: bool = False, purpose: str = "") -> Iterator[psycopg.Connection]:
        """A connection whose search_path is the schema; errors name host and port, never the password.
        Its application_name says what it is for, so lock waits can name who holds the lock."""
        if _raw_at_in_user_info(self.url):
            raise SourceDatabaseError(
                "DESAFIO_POSTGRES_URL has more than one '@' before the host: percent-encode the special "
                "characters of the user name and password (an '@' is %40)"
            )
        try:
            conn = psycopg.connect(self.url, autocommit=autocommit, connect_timeout=10, client_encoding="utf8",
                                   application_name=f"desafio_dagster {purpose}".strip())
        except psycopg.Error as error:
            reason = "; ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
            password = _password(self.url)
            if password:
                reason = reason.replace(password, "***")
            raise (SourceUnavailable if connection_lost(error) else SourceDatabaseError)(
                f"cannot connect to Postgres at {describe(self.url)}: {reason}. Check that the server runs "
                f"and DESAFIO_POSTGRES_URL ({redact(self.url)}) is right, or unset it to use the embedded Postgres"
            ) from None
        with conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            conn.commit()  # a session setting; callers start their own transaction
            yield conn

    def apply_schema(self, conn: psycopg.Connection | None = None) -> None:
        """Create the schema, type, tables and indexes that do not exist yet, and the change journal (idempotent)."""
        with self._maybe_connect(conn) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute(SCHEMA_SQL)
            journal.install(conn)

    @contextlib.contextmanager
    def _maybe_connect(self, conn: psycopg.Connection | None) -> Iterator[psycopg.Connection]:
        if conn is not None:
            yield conn
        else:
            with self.connect() as conn:
                yield conn

    def lock_tables(self, conn: psycopg.Connection, mode: str, on_wait: Callable[[str], None] | None = None) -> None:
        """Lock the four tables in one statement, so the loader and the readers never deadlock."""
        statement = sql.SQL("LOCK TABLE {} IN {} MODE").format(identifiers(TABLES), sql.SQL(mode))
        self.wait_for_lock(conn, statement, f"the {mode} lock on the four tables", on_wait)

    def wait_for_lock(self, conn: psycopg.Connection, statement: sql.Composed, what: str,
                      on_wait: Callable[[str], None] | None) -> None:
        """Take a lock inside the open transaction. If another session holds it, say who (on_wait),
        then wait at most lock_timeout seconds and fail with an explained error."""
        for timeout in (min(1.0, self.lock_timeout), self.lock_timeout):
            try:
                with conn.transaction():  # a savepoint: a timed-out attempt leaves the transaction usable
                    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(timeout * 1000)}ms")))
                    conn.execute(statement)
                    conn.execute("SET LOCAL lock_timeout TO DEFAULT")
                return
            except psycopg.errors.LockNotAvailable:
                holders = self._lock_holders()
                if timeout == self.lock_timeout:
                    raise SourceDatabaseError(
                        f"gave up after {self.lock_timeout:.0f} s waiting for {what} in {describe(self.url)}, "
                        f"held by {holders}: another populate or export is running on this database; let it finish "
                        f"and run again, or raise the postgres resource's lock_timeout_seconds"
                    ) from None
                if on_wait:
                    on_wait(f"waiting up to {self.lock_timeout:.0f} s for {what}, held by {holders}")

    def _lock_holders(self) -> str:
        """Who holds locks on the four tables, or advisory locks, in this database (another connection:
        a query on the waiting one would fix its snapshot)."""
        with self.connect(autocommit=True, purpose="lock report") as conn:
            rows = conn.execute(
                """SELECT a.pid, coalesce(nullif(a.application_name, ''), 'unnamed client'),
                          coalesce(extract(epoch FROM now() - a.xact_start)::int, 0)
                   FROM pg_stat_activity a
                   WHERE a.pid <> pg_backend_pid() AND a.pid IN (
                       SELECT l.pid FROM pg_locks l WHERE l.granted AND l.database = (
                           SELECT oid FROM pg_database WHERE datname = current_database())
                       AND (l.locktype = 'advisory' OR l.relation IN (SELECT to_regclass(t) FROM unnest(%s::text[]) t)))
                   ORDER BY a.pid""",
                ([f"{self.schema}.{table}" for table in TABLES],),
            ).fetchall()
        return ", ".join(f"pid {pid} ({name}, in its transaction for {age} s)" for pid, name, age in rows) or "another session"

    def missing_tables(self, conn: psycopg.Connection | None = None) -> list[str]:
        with self._maybe_connect(conn) as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_name = ANY(%s)",
                (self.schema, list(TABLES)),
            ).fetchall()
        present = {name for (name,) in rows}
        return [name for name in TABLES if name not in present]

    def require_tables(self, conn: psycopg.Connection | None = None) -> None:
        missing = self.missing_tables(conn)
        if missing:
            raise SourceDatabaseError(
                f"table(s) {', '.join(f'{self.schema}.{name}' for name in missing)} missing in "
                f"{describe(self.url)}: {POPULATE_FIRST}"
            )

    def row_counts(self, conn: psycopg.Connection | None = None) -> dict[str, int]:
        with self._maybe_connect(conn) as conn:
            return {
                name: one(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name)))[0]
                for name in TABLES
            }

    def fingerprint(self, conn: psycopg.Connection | None = None, tables: Iterable[str] = TABLES) -> dict[str, list[int]]:
        """Per table: rows, highest id and the XOR of its rows' ROW_HASH. Any load, insert, update
        or delete changes it (but for a 2^-64 chance); reading it costs one scan per table."""
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}, count(*), coalesce(max(id), 0), coalesce(bit_xor({}), 0) FROM {}").format(
                sql.Literal(name), sql.SQL(row_hash(name)), sql.Identifier(name))
            for name in tables
        )
        with self._maybe_connect(conn) as conn:
            return {name: [int(rows), int(top), int(xids)] for name, rows, top, xids in conn.execute(query)}

    def preview(self, table: str, limit: int = 5, conn: psycopg.Connection | None = None) -> list[dict]:
        """The first rows of a table by id, card numbers masked."""
        with self._maybe_connect(conn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            rows = cur.execute(
                sql.SQL("SELECT * FROM {} ORDER BY id LIMIT %s").format(sql.Identifier(table)), (limit,)
            ).fetchall()
        if rows and "num_cartao" in rows[0]:
            for row, number in zip(rows, masked(pa.array([row["num_cartao"] for row in rows], pa.string())).to_pylist()):
                row["num_cartao"] = number
        return rows
