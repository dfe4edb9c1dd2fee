"""Snapshot the source tables into Parquet for Spark, without JDBC. Pure: no Dagster.

Each table leaves Postgres through `COPY ... TO STDOUT`, is parsed by Arrow's
streaming CSV reader with exact types (numeric(10,2) stays decimal, timestamps
stay timestamps without time zone) and written to Parquet in bounded batches.
All four tables are read in one REPEATABLE READ transaction: one consistent snapshot.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.fs as pa_fs
import pyarrow.parquet as pq
from psycopg import sql

from desafio_dagster.core.audit import ClientFigures, expected_figures
from desafio_dagster.core.source_db import SourceDatabase, SourceDatabaseError, identifiers
from desafio_dagster.core.staging import Staging

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
# What each client's file must hold, from the tables themselves rather than the flat view's join.
_CLIENT_FIGURES = """
WITH per_card AS (SELECT id_cartao, count(*) AS movements, sum(vlr_transacao) AS total FROM movimento GROUP BY id_cartao)
SELECT a.id, a.nome, a.sobrenome, coalesce(sum(p.movements), 0)::bigint, coalesce(sum(p.total), 0)
FROM associado a
LEFT JOIN conta c ON c.id_associado = a.id
LEFT JOIN cartao k ON k.id_conta = c.id
LEFT JOIN per_card p ON p.id_cartao = k.id
GROUP BY a.id ORDER BY a.id"""
ROWS_PER_FILE = 250_000
_BLOCK_BYTES = 8 << 20


class _CopyStream(io.RawIOBase):
    """A readable file over the chunks of a psycopg COPY ... TO STDOUT."""

    def __init__(self, copy):
        self._chunks = iter(copy)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


@dataclass(frozen=True)
class Snapshot:
    """What one export read, all from one transaction."""

    counts: dict[str, int]  # rows per table
    clients: dict[str, ClientFigures]  # by file name: what each client's file must hold
    fingerprint: dict[str, list[int]]  # see SourceDatabase.fingerprint
    figures_seconds: float  # the time the two took to compute


def snapshot_to_parquet(
    db: SourceDatabase,
    staging: Staging,
    on_progress: Callable[[str, int, float], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Snapshot:
    """Write the four tables as Parquet under staging/<table>/ (replacing what is there) and
    return the snapshot's figures."""
    staging.remove()  # a retried attempt starts from a fresh staging
    fs, root = staging.filesystem()
    fs.create_dir(root, recursive=True)
    counts: dict[str, int] = {}
    with db.connect(purpose="export") as conn:
        db.require_tables(conn)
        conn.commit()
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # Wait for a populate in progress before the snapshot is taken (at the first query),
        # so the snapshot is the old database or the new one, never empty tables.
        db.lock_tables(conn, "ACCESS SHARE", on_wait)
        conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
        with conn.cursor() as cur:
            for table, schema in SOURCE_SCHEMAS.items():
                started = time.monotonic()
                statement = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv)").format(
                    identifiers(schema.names), sql.Identifier(table)
                )
                fs.create_dir(f"{root}/{table}", recursive=True)
                with cur.copy(statement) as copy:
                    counts[table] = _write_parquet(io.BufferedReader(_CopyStream(copy), _BLOCK_BYTES), schema, fs, f"{root}/{table}")
                if on_progress:
                    on_progress(table, counts[table], time.monotonic() - started)
        started = time.monotonic()
        clients = expected_figures(conn.execute(_CLIENT_FIGURES))
        fingerprint = db.fingerprint(conn)
        figures_seconds = time.monotonic() - started
    if counts["associado"] == 0:
        raise SourceDatabaseError(
            f"the source database {db} has no clients (associado is empty): run the populate job first"
        )
    return Snapshot(counts, clients, fingerprint, figures_seconds)


def _write_parquet(stream: io.BufferedReader, schema: pa.Schema, fs: pa_fs.FileSystem, folder: str) -> int:
    if not stream.peek(1):  # an empty table: one empty file, so Spark still knows its schema
        pq.ParquetWriter(f"{folder}/part-00000.parquet", schema, filesystem=fs).close()
        return 0
    reader = pa_csv.open_csv(
        stream,
        read_options=pa_csv.ReadOptions(column_names=schema.names, block_size=_BLOCK_BYTES),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(column_types=schema, strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    rows, part, writer, in_file = 0, 0, None, 0
    try:
        for batch in reader:
            if writer is None or in_file >= ROWS_PER_FILE:
                if writer is not None:
                    writer.close()
                writer = pq.ParquetWriter(f"{folder}/part-{part:05d}.parquet", schema, filesystem=fs)
                part, in_file = part + 1, 0
            writer.write_batch(batch)
            rows += batch.num_rows
            in_file += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    return rows
