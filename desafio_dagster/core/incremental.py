"""Incremental export: which clients a new version of the per-client files rewrites, and which files
it carries unchanged from the published version. Pure: no Dagster.

Each version holds, beside the client files and _index.csv:
- _snapshot.csv: per client, the snapshot's figures and fingerprint (audit.MANIFEST_COLUMNS);
- _format.json: what else decides a file's bytes for the same rows: the export's code version, the
  contract's columns, masking;
- _readback.csv: each file as it was read back after it was written (its scan, for the audit), its size
  and mtime then, and the version that wrote it.

A client's file is carried into the next version (a hard link, not a copy) when the format is the same,
the client's figures and fingerprint are the same, and the file is unmodified since it was read back
(same size and mtime); it keeps its read-back record. Every other client of the snapshot is rewritten;
clients no longer in the snapshot lose their file.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from desafio_dagster.core.audit import MANIFEST_FILE, ClientFigures, FileScan, read_manifest, scan_files
from desafio_dagster.core.errors import DesafioError
from desafio_dagster.core.layout import CSV_COLUMNS, INDEX_FILE, ClientFile, read_index

FORMAT_FILE = "_format.json"
READBACK_FILE = "_readback.csv"
READBACK_COLUMNS = ("file", "bytes", "mtime_ns", "written_in", "header_ok", "rows", "vlr_transacao_total",
                    "long_digit_run")


class PlanError(DesafioError):
    """The export was asked for something the snapshot cannot give."""


def file_format(code_version: str, masked: bool) -> dict:
    """Everything but the rows that decides what a client's file holds."""
    return {"code_version": code_version, "columns": list(CSV_COLUMNS), "masked": masked}


def write_format(path: Path, fmt: dict) -> None:
    path.write_text(json.dumps(fmt, sort_keys=True) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class ReadBack:
    """A client file as it was read back once written: its scan, its size and mtime then, and the
    version folder that wrote it."""

    scan: FileScan
    bytes: int
    mtime_ns: int
    written_in: str

    @classmethod
    def of(cls, path: Path, scan: FileScan, written_in: str) -> ReadBack:
        stat = path.stat()
        return cls(scan, stat.st_size, stat.st_mtime_ns, written_in)

    def unmodified(self, stat: os.stat_result | None) -> bool:
        """A file whose stat this is (None: no such file) is as it was read back (same size and mtime)."""
        return stat is not None and (stat.st_size, stat.st_mtime_ns) == (self.bytes, self.mtime_ns)


def write_readback(path: Path, records: dict[str, ReadBack]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(READBACK_COLUMNS)
        for name in sorted(records):
            r = records[name]
            writer.writerow((name, r.bytes, r.mtime_ns, r.written_in, int(r.scan.header_ok),
                             "" if r.scan.rows is None else r.scan.rows,
                             "" if r.scan.total is None else f"{r.scan.total:.2f}", int(r.scan.long_digit_run)))


def read_readback(path: Path) -> dict[str, ReadBack]:
    """_readback.csv by file name; empty if the version has none."""
    if not path.exists():
        return {}
    with open(path, encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle)
        next(rows)  # READBACK_COLUMNS
        return {file: ReadBack(FileScan(header_ok == "1", int(count) if count else None,
                                        Decimal(total) if total else None, digits == "1"),
                               int(size), int(mtime_ns), written_in)
                for file, size, mtime_ns, written_in, header_ok, count, total, digits in rows}


@dataclass(frozen=True)
class Carried:
    """A file of the published version that the new version links instead of rewriting."""

    source: Path
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
    published: Path | None = None  # the version the files are carried from


def full_plan(expected: dict[str, ClientFigures], fmt: dict, reason: str = "", published: Path | None = None) -> Plan:
    return Plan("full", reason, fmt, {f.client_id for f in expected.values()}, published=published)


def plan_export(folder: Path, expected: dict[str, ClientFigures], fmt: dict, full_refresh: bool = False,
                targeted: Iterable[int] = ()) -> Plan:
    """Compare the snapshot's figures (expected) with the version published at folder (a symlink).
    targeted: client ids rewritten whatever their fingerprint."""
    targeted = set(targeted)
    unknown = sorted(targeted - {f.client_id for f in expected.values()})
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise PlanError(f"clients {shown} are not in the source snapshot: name clients that exist (associado.id)")
    published = folder.resolve() if folder.is_symlink() else None
    if full_refresh:
        return full_plan(expected, fmt, "full_refresh was asked", published)
    if published is None or not (published / INDEX_FILE).exists():
        return full_plan(expected, fmt, "first export: nothing is published yet", published)
    if not (published / FORMAT_FILE).exists():
        return full_plan(expected, fmt, "the published version predates incremental export", published)
    before = json.loads((published / FORMAT_FILE).read_text(encoding="utf-8"))
    if before != fmt:
        changed = sorted(key for key in fmt.keys() | before.keys() if fmt.get(key) != before.get(key))
        return full_plan(expected, fmt, f"{', '.join(changed)} changed since the published version", published)
    manifest, index = read_manifest(published / MANIFEST_FILE), read_index(published / INDEX_FILE)
    records, stats = read_readback(published / READBACK_FILE), client_file_stats(published)
    carry, modified = {}, []
    for name, figures in expected.items():
        if figures.client_id in targeted or manifest.get(name) != figures or name not in index or name not in records:
            continue
        if not records[name].unmodified(stats.get(name)):
            modified.append(name)
            continue
        carry[name] = Carried(published / name, index[name], records[name])
    rewrite = {f.client_id for name, f in expected.items() if name not in carry}
    ids = {f.client_id for f in expected.values()}
    removed = sorted(name for name, f in manifest.items() if f.client_id not in ids)
    if not rewrite and not removed:
        return Plan("unchanged", "no client changed", fmt, set(), carry, published=published)
    if not carry:  # e.g. after a populate: read everything, by ranges of clients
        return Plan("full", "every client changed since the published version", fmt, rewrite, {}, removed, modified,
                    published)
    what = f"{len(rewrite):,} clients new, changed or asked for"
    return Plan("incremental", what, fmt, rewrite, carry, removed, modified, published)


def client_file_stats(version: Path) -> dict[str, os.stat_result]:
    """The stat of every client file of a version (names not starting with '_'), in one listing."""
    with os.scandir(version) as entries:
        return {e.name: e.stat(follow_symlinks=False) for e in entries if not e.name.startswith("_")}


def verified_scans(version: Path, written_in: str) -> tuple[dict[str, FileScan], int]:
    """The scan of every client file of a version, for the checks: files written by written_in (the
    version the checked run wrote) and files modified since they were read back are read again; the
    others keep the scan recorded when they were read back. Returns (scans by file name, files read)."""
    records, stats = read_readback(version / READBACK_FILE), client_file_stats(version)
    names = sorted(stats)
    to_read = [n for n in names if n not in records or records[n].written_in == written_in
               or not records[n].unmodified(stats[n])]
    scans = {n: records[n].scan for n in names if n in records}
    scans |= dict(zip(to_read, scan_files([version / n for n in to_read])))
    return scans, len(to_read)
