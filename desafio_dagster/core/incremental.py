"""Incremental export: which clients a new version of the per-client files rewrites, and which files
it carries unchanged from the published version. Pure: no Dagster.

Each version holds, beside the client files and _index.csv:
- _snapshot.csv: per client, the snapshot's figures and fingerprint (audit.MANIFEST_COLUMNS);
- _format.json: what else decides a file's bytes for the same rows: the export's code version, the
  contract's columns, masking;
- _readback.csv: each file as it was read back after it was written (its scan, for the audit), its size
  and mtime then, and the version that wrote it.

A client's file is carried into the next version (a hard link locally, a server-side copy on S3: see
store.py) when the format is the same, the client's figures and fingerprint are the same, and the file is
unmodified since it was read back (same size and mtime, from one listing of the version); it keeps its
read-back scan. Every other client of the snapshot is rewritten;
clients no longer in the snapshot lose their file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from desafio_dagster.core.audit import MANIFEST_FILE, ClientFigures, FileScan, parse_manifest, scan_many
from desafio_dagster.core.errors import DesafioError
from desafio_dagster.core.layout import CSV_COLUMNS, INDEX_FILE, ClientFile, csv_bytes, parse_index
from desafio_dagster.core.store import Stat, Store

FORMAT_FILE = "_format.json"
READBACK_FILE = "_readback.csv"
READBACK_COLUMNS = ("file", "bytes", "mtime_ns", "written_in", "header_ok", "rows", "vlr_transacao_total",
                    "long_digit_run")


class PlanError(DesafioError):
    """The export was asked for something the snapshot cannot give."""


def file_format(code_version: str, masked: bool) -> dict:
    """Everything but the rows that decides what a client's file holds."""
    return {"code_version": code_version, "columns": list(CSV_COLUMNS), "masked": masked}


def format_bytes(fmt: dict) -> bytes:
    """_format.json's bytes."""
    return (json.dumps(fmt, sort_keys=True) + "\n").encode("utf-8")


@dataclass(frozen=True)
class ReadBack:
    """A client file as it was read back once written: its scan, its size and mtime then (its Stat in the
    store), and the version that wrote it."""

    scan: FileScan
    bytes: int
    mtime_ns: int
    written_in: str

    @classmethod
    def of(cls, stat: Stat, scan: FileScan, written_in: str) -> ReadBack:
        return cls(scan, stat.size, stat.mtime_ns, written_in)

    def unmodified(self, stat: Stat | None) -> bool:
        """The file (its Stat now; None if it is gone) is as it was read back (same size and mtime)."""
        return stat is not None and (stat.size, stat.mtime_ns) == (self.bytes, self.mtime_ns)


def readback_bytes(records: dict[str, ReadBack]) -> bytes:
    """_readback.csv's bytes."""
    return csv_bytes(READBACK_COLUMNS, (
        (name, r.bytes, r.mtime_ns, r.written_in, int(r.scan.header_ok), "" if r.scan.rows is None else r.scan.rows,
         "" if r.scan.total is None else f"{r.scan.total:.2f}", int(r.scan.long_digit_run))
        for name, r in sorted(records.items())))


def parse_readback(data: bytes) -> dict[str, ReadBack]:
    rows = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    next(rows)  # READBACK_COLUMNS
    return {file: ReadBack(FileScan(header_ok == "1", int(count) if count else None,
                                    Decimal(total) if total else None, digits == "1"),
                           int(size), int(mtime_ns), written_in)
            for file, size, mtime_ns, written_in, header_ok, count, total, digits in rows}


def _readback_of(store: Store, version: str, listed: dict[str, Stat]) -> dict[str, ReadBack]:
    return parse_readback(store.read(version, READBACK_FILE)) if READBACK_FILE in listed else {}


@dataclass(frozen=True)
class Carried:
    """A file of the published version that the new version carries (links or copies) instead of rewriting."""

    entry: ClientFile  # its row of _index.csv
    record: ReadBack


@dataclass(frozen=True)
class Plan:
    """What an export writes through Spark (rewrite: client ids) and carries from the published version."""

    mode: str  # "full", "incremental" or "unchanged" (nothing to write, carry or remove: nothing to publish)
    reason: str
    format: dict  # file_format of the new version
    rewrite: set[int]
    carry: dict[str, Carried] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)  # files of clients no longer in the snapshot
    modified: list[str] = field(default_factory=list)  # published files changed since read back: rewritten
    published: str | None = None  # the version the files are carried from (its name in the store)


def full_plan(expected: dict[str, ClientFigures], fmt: dict, reason: str = "", published: str | None = None) -> Plan:
    return Plan("full", reason, fmt, {f.client_id for f in expected.values()}, published=published)


def plan_export(store: Store, expected: dict[str, ClientFigures], fmt: dict, full_refresh: bool = False,
                targeted: Iterable[int] = ()) -> Plan:
    """Compare the snapshot's figures (expected) with the version the store publishes (resolved once).
    targeted: client ids rewritten whatever their fingerprint."""
    targeted, ids = set(targeted), {f.client_id for f in expected.values()}
    unknown = sorted(targeted - ids)
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise PlanError(f"clients {shown} are not in the source snapshot: name clients that exist (associado.id)")
    published = store.published()
    if full_refresh:
        return full_plan(expected, fmt, "full_refresh was asked", published)
    listed = store.files(published) if published else {}  # one listing: which files, their size and mtime
    if INDEX_FILE not in listed:
        return full_plan(expected, fmt, "first export: nothing is published yet", published)
    if FORMAT_FILE not in listed:
        return full_plan(expected, fmt, "the published version predates incremental export", published)
    before = json.loads(store.read(published, FORMAT_FILE).decode("utf-8"))
    if before != fmt:
        changed = sorted(key for key in fmt.keys() | before.keys() if fmt.get(key) != before.get(key))
        return full_plan(expected, fmt, f"{', '.join(changed)} changed since the published version", published)
    manifest = parse_manifest(store.read(published, MANIFEST_FILE))
    index = parse_index(store.read(published, INDEX_FILE))
    records = _readback_of(store, published, listed)
    carry, modified = {}, []
    for name, figures in expected.items():
        if figures.client_id in targeted or manifest.get(name) != figures or name not in index or name not in records:
            continue
        if not records[name].unmodified(listed.get(name)):
            modified.append(name)
            continue
        carry[name] = Carried(index[name], records[name])
    rewrite = {f.client_id for name, f in expected.items() if name not in carry}
    removed = sorted(name for name, f in manifest.items() if f.client_id not in ids)
    if not rewrite and not removed:
        return Plan("unchanged", "no client changed", fmt, set(), carry, published=published)
    if not carry:  # e.g. after a populate: read everything, by ranges of clients
        return Plan("full", "every client changed since the published version", fmt, rewrite, {}, removed, modified,
                    published)
    what = f"{len(rewrite):,} clients new, changed or asked for"
    return Plan("incremental", what, fmt, rewrite, carry, removed, modified, published)


def verified_scans(store: Store, version: str, written_in: str) -> tuple[dict[str, FileScan], int]:
    """The scan of every client file of a version, for the checks: files written by written_in (the
    version the checked run wrote) and files modified since they were read back are read again; the
    others keep the scan recorded when they were read back. Returns (scans by file name, files read)."""
    listed = store.files(version)
    records = _readback_of(store, version, listed)
    names = sorted(name for name in listed if not name.startswith("_"))
    to_read = [n for n in names if n not in records or records[n].written_in == written_in
               or not records[n].unmodified(listed[n])]
    scans = {n: records[n].scan for n in names if n in records}
    scans |= dict(zip(to_read, scan_many(store.read_many(version, to_read))))
    return scans, len(to_read)
