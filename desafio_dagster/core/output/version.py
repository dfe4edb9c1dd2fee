"""A version of the per-client files, described once: the files it holds besides one CSV per client, their
schemas, and how each is written and read. Pure: no Dagster.

Locally a version is a folder, on S3 a key prefix (store.py); a reader resolves the published one once and reads
its _index.csv, the one record that is CSV (layout.table_bytes, layout.read_table). The export's own records,
_snapshot.arrow and _readback.arrow, are Arrow IPC files compressed with zstd (record_bytes, parse_record): at a
million clients 22 MiB instead of 109 and 0.14 s to write instead of 0.7, 0.06 s to read instead of 0.4."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from desafio_dagster.core.output.layout import CSV_COLUMNS, is_sorted, read_table

# A version's files, besides one CSV per client (each file's writer and readers in brackets):
INDEX_FILE = "_index.csv"  # the reader's map: client_id, nome, sobrenome, file, rows (on S3 also the version
#                            holding each file) [publish.py; readers, the checks, the plan]
MANIFEST_FILE = "_snapshot.arrow"  # what the source snapshot held, per client: the audit's figures [publish, audit.py]
READBACK_FILE = "_readback.arrow"  # each client file as read back once written, and the version holding it, written
#                                    last: a version without it is incomplete [publish.py; incremental.py, store.py]
# A version published by an earlier release holds those two as CSV, under these names: read as well
# (Store.read_record, parse_record), so an upgrade rewrites nothing and loses no carried file.
EARLIER_NAMES = {MANIFEST_FILE: "_snapshot.csv", READBACK_FILE: "_readback.csv"}
FORMAT_FILE = "_format.json"  # what else decides a file's bytes: the code version, the columns, masking [incremental]
SOURCE_FILE = "_source.json"  # the source snapshot a version was exported from (journal.py) [incremental.py]
# On S3 only (locally a symlink, a folder's name and the output's lock do these jobs; store.py):
POINTER_FILE = "_published"  # beside the versions: the published version's name, written last, by compare-and-swap
REJECTED_FILE = "_rejected"  # beside the versions: the last version that failed its audit, kept for inspection
LEASE_FILE = "_lease"  # in a version being written: other exports' cleanups spare the version while it is live


def with_earlier(*records: str) -> tuple[str, ...]:
    """The records' names, each followed by its earlier name where it has one: what a version may hold of them."""
    return tuple(name for record in records for name in (record, EARLIER_NAMES.get(record)) if name)


INDEX_SCHEMA = pa.schema([("client_id", pa.int64()), ("nome_associado", pa.string()),
                          ("sobrenome_associado", pa.string()), ("file", pa.string()), ("rows", pa.int64())])
# On a store that carries files by reference (S3), _index.csv has a sixth column: the version whose folder
# (key prefix) holds the file: the version itself for a file it wrote, an earlier one for a file it carried.
LOCATED_INDEX_SCHEMA = INDEX_SCHEMA.append(pa.field("version", pa.string()))


def parse_index(data: bytes) -> pa.Table:
    """_index.csv (INDEX_SCHEMA)."""
    return read_table(data, INDEX_SCHEMA)


# What each client's file must hold: its rows and the sum of their vlr_transacao; and the fingerprint
# of the client's rows in the four tables (extract._CLIENT_FIGURES), which changes with any of them.
# The snapshot's figures are a table of this schema, by client id; _snapshot.arrow holds it.
FIGURES_SCHEMA = pa.schema([("client_id", pa.int64()), ("file", pa.string()), ("rows", pa.int64()),
                            ("vlr_transacao_total", pa.decimal128(18, 2)), ("fingerprint", pa.int64())])


_ARROW_MAGIC = b"ARROW1"  # how an Arrow IPC file starts
_RECORD_BATCH_ROWS = 1 << 20


def record_bytes(table: pa.Table, schema: pa.Schema) -> bytes:
    """An export record's bytes: schema's columns of table, as an Arrow IPC file, zstd-compressed, in batches of a
    fixed size (the same rows make the same bytes however the table was built)."""
    table = table.select(schema.names).cast(schema).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table, max_chunksize=_RECORD_BATCH_ROWS)
    return sink.getvalue().to_pybytes()


def parse_record(data: bytes, schema: pa.Schema) -> pa.Table:
    """An export record, with schema's columns that it holds, in schema's order: an Arrow IPC file (record_bytes),
    or the CSV an earlier release wrote (layout.read_table)."""
    if not data.startswith(_ARROW_MAGIC):
        return read_table(data, schema)
    table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
    return table.select([name for name in schema.names if name in table.column_names])


def manifest_bytes(expected: pa.Table) -> bytes:
    """_snapshot.arrow's bytes."""
    return record_bytes(expected, FIGURES_SCHEMA)


def manifest_sha256(data: bytes) -> str:
    """The digest a materialization records of its version's _snapshot.arrow: the checks judge against those bytes."""
    return hashlib.sha256(data).hexdigest()


def parse_manifest(data: bytes) -> pa.Table:
    """_snapshot.arrow (FIGURES_SCHEMA; a fingerprint of 0 where a version recorded none)."""
    table = parse_record(data, FIGURES_SCHEMA)
    if "fingerprint" not in table.column_names:
        table = table.append_column("fingerprint", pa.array([0] * len(table), pa.int64()))
    return table


# A written file read back (the audit's scan, audit.py): header, rows and value sum (null where it does not
# parse as CSV), and whether a field holds a run of 12 or more digits.
SCAN_SCHEMA = pa.schema([("header_ok", pa.bool_()), ("rows", pa.int64()), ("vlr_transacao_total", pa.decimal128(18, 2)),
                         ("long_digit_run", pa.bool_())])


# Each client file as its task stored it: its size and mtime then (from the version's listing or its record),
# the version that wrote it, and its scan (SCAN_SCHEMA).
READBACK_SCHEMA = pa.schema([("file", pa.string()), ("bytes", pa.int64()), ("mtime_ns", pa.int64()),
                             ("written_in", pa.string()), *SCAN_SCHEMA])
# What a version's _readback.arrow says of where each of its client files is: the version that wrote it.
HELD_SCHEMA = pa.schema([("file", pa.string()), ("written_in", pa.string())])


def file_format(code_version: str, masked: bool) -> dict:
    """Everything but the rows that decides what a client's file holds."""
    return {"code_version": code_version, "columns": list(CSV_COLUMNS), "masked": masked}


def format_bytes(fmt: dict) -> bytes:
    """_format.json's bytes."""
    return (json.dumps(fmt, sort_keys=True) + "\n").encode("utf-8")


def source_bytes(snapshot: str | None) -> bytes:
    """_source.json's bytes: the source snapshot (journal.current_snapshot), null without a journal."""
    return (json.dumps({"snapshot": snapshot}) + "\n").encode("utf-8")


def readback_bytes(records: pa.Table) -> bytes:
    """_readback.arrow's bytes, by file name."""
    records = records.select(READBACK_SCHEMA.names)
    return record_bytes(records if is_sorted(records["file"]) else records.sort_by("file"), READBACK_SCHEMA)


def parse_readback(data: bytes, schema: pa.Schema = READBACK_SCHEMA) -> pa.Table:
    """_readback.arrow (READBACK_SCHEMA, or a selection of its columns such as HELD_SCHEMA)."""
    return parse_record(data, schema)
