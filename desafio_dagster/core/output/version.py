"""A version of the per-client files, described once: the files it holds besides one CSV per client, their
schemas, and how each is written and read. Pure: no Dagster.

Locally a version is a folder, on S3 a key prefix (store.py); a reader resolves the published one once and reads
its _index.csv. The records are CSV written by layout.table_bytes and read back by layout.read_table."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from desafio_dagster.core.output.layout import CSV_COLUMNS, is_sorted, read_table, table_bytes

# A version's files, besides one CSV per client (each file's writer and readers in brackets):
INDEX_FILE = "_index.csv"  # the reader's map: client_id, nome, sobrenome, file, rows (on S3 also the version
#                            holding each file) [publish.py; readers, the checks, the plan]
MANIFEST_FILE = "_snapshot.csv"  # what the source snapshot held, per client: the audit's figures [publish, audit.py]
READBACK_FILE = "_readback.csv"  # each client file as read back once written, and the version holding it, written
#                                  last: a version without it is incomplete [publish.py; incremental.py, store.py]
FORMAT_FILE = "_format.json"  # what else decides a file's bytes: the code version, the columns, masking [incremental]
SOURCE_FILE = "_source.json"  # the source snapshot a version was exported from (journal.py) [incremental.py]
# On S3 only (locally a symlink, a folder's name and the output's lock do these jobs; store.py):
POINTER_FILE = "_published"  # beside the versions: the published version's name, written last, by compare-and-swap
REJECTED_FILE = "_rejected"  # beside the versions: the last version that failed its audit, kept for inspection
LEASE_FILE = "_lease"  # in a version being written: other exports' cleanups spare the version while it is live


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
# The snapshot's figures are a table of this schema, by client id; _snapshot.csv holds it.
FIGURES_SCHEMA = pa.schema([("client_id", pa.int64()), ("file", pa.string()), ("rows", pa.int64()),
                            ("vlr_transacao_total", pa.decimal128(18, 2)), ("fingerprint", pa.int64())])


def manifest_bytes(expected: pa.Table) -> bytes:
    """_snapshot.csv's bytes."""
    return table_bytes(expected)


def manifest_sha256(data: bytes) -> str:
    """The digest a materialization records of its version's _snapshot.csv: the checks judge against those bytes."""
    return hashlib.sha256(data).hexdigest()


def parse_manifest(data: bytes) -> pa.Table:
    """_snapshot.csv (FIGURES_SCHEMA; a fingerprint of 0 where a version recorded none)."""
    table = read_table(data, FIGURES_SCHEMA)
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
# What a version's _readback.csv says of where each of its client files is: the version that wrote it.
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
    """_readback.csv's bytes, by file name."""
    records = records.select(READBACK_SCHEMA.names)
    return table_bytes(records if is_sorted(records["file"]) else records.sort_by("file"))


def parse_readback(data: bytes) -> pa.Table:
    """_readback.csv (READBACK_SCHEMA)."""
    return read_table(data, READBACK_SCHEMA)
