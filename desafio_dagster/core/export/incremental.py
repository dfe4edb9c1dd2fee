"""Incremental export: which clients a new version of the per-client files rewrites, and which files
it carries unchanged from the published version. Pure: no Dagster.

The plan reads the published version's records (version.py describes each): its _snapshot.arrow (the figures and
fingerprints), _format.json, _index.csv and _readback.arrow; and its _source.json, where the source keeps a change
journal (core/source/journal.py), so that only the clients changed since have their figures computed.

A client's file is carried into the next version (a hard link locally; on S3 it stays where it was
written, and the new version's index names that version: see store.py) when the format is the same, the
client's figures and fingerprint are the same; the file is taken as its records say (no listing of the
published version: a file edited by hand is the checks' to find, verified_scans) and keeps its recorded scan.
Every other client of the snapshot is rewritten; clients no longer in the snapshot lose their file.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from desafio_dagster.core.errors import DesafioError
from desafio_dagster.core.export.extract import PublishedFigures
from desafio_dagster.core.output.layout import client_ids, is_sorted, matched, same
from desafio_dagster.core.output.store import Listing, Store
from desafio_dagster.core.output.version import (
    FORMAT_FILE,
    INDEX_FILE,
    INDEX_SCHEMA,
    MANIFEST_FILE,
    READBACK_FILE,
    READBACK_SCHEMA,
    SOURCE_FILE,
    parse_index,
    parse_manifest,
    parse_readback,
)


class PlanError(DesafioError):
    """The export was asked for something the snapshot cannot give."""


def published_figures(store: Store) -> PublishedFigures | None:
    """What the published version recorded of its source (its snapshot and figures), if it recorded a snapshot."""
    published = store.published()
    if published is None:
        return None
    try:
        snapshot = json.loads(store.read(published, SOURCE_FILE))["snapshot"]
    except FileNotFoundError:  # a version made before the journal
        return None
    return PublishedFigures(published, snapshot, parse_manifest(store.read_record(published, MANIFEST_FILE))) if snapshot else None


def _readback_of(store: Store, version: str) -> pa.Table:
    try:
        return parse_readback(store.read_record(version, READBACK_FILE))
    except FileNotFoundError:
        return READBACK_SCHEMA.empty_table()


def unmodified(records: pa.Table, listing: Listing) -> pa.ChunkedArray:
    """For each record, whether its file is still as it was written (listed, with the same size and mtime)."""
    return same(records, matched(records["file"], listing.client_files()), ["bytes", "mtime_ns"])


@dataclass(frozen=True)
class Plan:
    """What an export writes through Spark (rewrite: client ids) and carries from the published version."""

    mode: str  # "full", "incremental" or "unchanged" (nothing to write, carry or remove: nothing to publish)
    reason: str
    format: dict  # file_format of the new version
    rewrite: pa.Array  # client ids, in order
    carry_index: pa.Table = field(default_factory=INDEX_SCHEMA.empty_table)  # carried files' _index.csv rows
    carry_records: pa.Table = field(default_factory=READBACK_SCHEMA.empty_table)  # and their _readback.arrow rows
    # (an "unchanged" plan carries every file of the published version: its index, not its records)
    removed: list[str] = field(default_factory=list)  # files of clients no longer in the snapshot
    published: str | None = None  # the version the files are carried from (its name in the store)

    @property
    def carried(self) -> int:
        return len(self.carry_index)


def full_plan(expected: pa.Table, fmt: dict, reason: str = "", published: str | None = None) -> Plan:
    return Plan("full", reason, fmt, expected["client_id"].combine_chunks(), published=published)


def plan_export(store: Store, expected: pa.Table, fmt: dict, full_refresh: bool = False,
                targeted: Iterable[int] = (), known: PublishedFigures | None = None) -> Plan:
    """Compare the snapshot's figures (expected: version.FIGURES_SCHEMA) with the version the store publishes
    (resolved once), in Arrow: a million clients in a few seconds. targeted: client ids rewritten whatever
    their fingerprint. known: that version's figures if read already (published_figures)."""
    if store.by_reference:  # where carried files are is part of a version's format: a version whose
        fmt = {**fmt, "carried_files": "held where written"}  # carried files were copies is not read as one
    targeted_ids = pa.array(sorted(set(targeted)), pa.int64())
    unknown = targeted_ids.filter(pc.invert(pc.is_in(targeted_ids, value_set=expected["client_id"]))).to_pylist()
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise PlanError(f"clients {shown} are not in the source snapshot: name clients that exist (associado.id)")
    published = store.published()
    if full_refresh:
        return full_plan(expected, fmt, "full_refresh was asked", published)
    if published is None:
        return full_plan(expected, fmt, "first export: nothing is published yet", published)
    try:
        published_format = json.loads(store.read(published, FORMAT_FILE).decode("utf-8"))
        manifest = known.clients if known and known.version == published else parse_manifest(
            store.read_record(published, MANIFEST_FILE))
        index = parse_index(store.read(published, INDEX_FILE))
        if published_format == fmt and not len(targeted_ids) and expected.equals(manifest):  # the usual day without a change
            return Plan("unchanged", "no client changed", fmt, pa.array([], pa.int64()), index, published=published)
        records = parse_readback(store.read_record(published, READBACK_FILE))
    except FileNotFoundError:
        return full_plan(expected, fmt, "the published version predates incremental export", published)
    if published_format != fmt:
        changed = sorted(key for key in fmt.keys() | published_format.keys()
                         if fmt.get(key) != published_format.get(key))
        return full_plan(expected, fmt, f"{', '.join(changed)} changed since the published version", published)
    # Clients whose file name and figures are those the published version recorded, not asked for, and whose
    # file the published version lists in its index and its read-back records: their files are carried as
    # recorded (a file edited by hand since is the checks' to find). Each table is aligned to the snapshot's
    # clients first, by client id (integers: matching a million names cost 0.6 s here), the records by file to
    # the figures of their own version (aligned already, as a rule).
    records = matched(manifest["file"], records).append_column("client_id", manifest["client_id"])
    recorded, entries, records = matched(expected["client_id"], manifest, index, records, key="client_id")
    records = records.select(READBACK_SCHEMA.names)
    kept = functools.reduce(pc.and_, [
        same(expected, recorded, ["file", "rows", "vlr_transacao_total", "fingerprint"]),
        pc.invert(pc.is_in(expected["client_id"], value_set=targeted_ids)),
        pc.is_valid(entries["file"]), pc.is_valid(records["file"])])
    carry_index, carry_records = entries.filter(kept), records.filter(kept)
    rewrite = pc.filter(expected["client_id"], pc.invert(kept)).combine_chunks()
    removed = sorted(manifest.filter(pc.invert(pc.is_in(manifest["client_id"], value_set=expected["client_id"])))
                     ["file"].to_pylist())
    if not len(rewrite) and not removed:
        return Plan("unchanged", "no client changed", fmt, rewrite, carry_index, carry_records, published=published)
    if not len(carry_index):  # e.g. after a populate: read everything, by ranges of clients
        return Plan("full", "every client changed since the published version", fmt, rewrite, removed=removed,
                    published=published)
    what = f"{len(rewrite):,} clients new, changed or asked for"
    return Plan("incremental", what, fmt, rewrite, carry_index, carry_records, removed, published)


# The checks stat one slice of the files their run did not write (by client id), a slice a day: a file
# edited by hand after publication is found within SLICES days (a stat of every file cost 2.4-3.5 s at 1M
# clients here, in every run, however little it changed).
SLICES = 16


def todays_slice(now: float | None = None) -> int:
    """The slice of the files the checks stat today (days since the epoch, UTC, modulo SLICES)."""
    return int((time.time() if now is None else now) // 86400) % SLICES


def verified_scans(store: Store, version: str, written_in: str, checked_slice: int) -> tuple[pa.Table, int]:
    """The scan of every client file of a version (file, then version.SCAN_SCHEMA), for the checks: files
    written by written_in (the version the checked run wrote: all of them, or every Store.reread_every-th by
    name), files without a record, and files whose size or mtime changed since they were written are read
    again; the others keep the scan recorded when they were written. Sizes and mtimes: locally, of the files
    of checked_slice (client id modulo SLICES) that written_in did not write, the others not stat'ed; on S3,
    of every file in the version's own prefix (its listing gives them). Returns (scans, files read)."""
    records = _readback_of(store, version)
    by_run = pc.fill_null(pc.equal(records["written_in"], written_in), False)
    stat = pc.filter(records["file"], pc.and_(_in_slice(records["file"], checked_slice), pc.invert(by_run)))
    listing = store.with_held(version, store.files(version, stats_of=stat.to_pylist()), records)
    clients = listing.client_files()
    records = matched(clients["file"], records)  # nulls for a listed file without a record
    written = np.flatnonzero(pc.fill_null(pc.equal(records["written_in"], written_in), False).to_numpy(zero_copy_only=False))
    reread = np.zeros(len(records), bool)
    reread[written[:: store.reread_every]] = True
    as_recorded = pc.or_(pc.is_null(clients["bytes"]), unmodified(records, listing))  # not stat'ed, or unchanged
    trusted = functools.reduce(pc.and_, [pa.array(~reread), pc.is_valid(records["file"]), as_recorded])
    to_read = pc.filter(clients["file"], pc.invert(trusted)).to_pylist()
    read = store.scan(version, to_read).add_column(0, "file", pa.array(to_read, pa.string()))
    # In the listing's order, by file: each row read again takes its record's place (one take of the records and
    # the rows read, where sorting a million names took 0.5 s).
    again = ~pc.fill_null(trusted, False).to_numpy(zero_copy_only=False)
    at = np.arange(len(again))
    at[again] = len(again) + np.arange(np.count_nonzero(again))
    scans = pa.concat_tables([records.select(read.column_names), read]).take(at) if again.any() else \
        records.select(read.column_names)
    return (scans if is_sorted(scans["file"]) else scans.sort_by("file")), len(to_read)


def _in_slice(files: pa.ChunkedArray | pa.Array, checked_slice: int) -> pa.ChunkedArray | pa.Array:
    """Whether each file's client id falls in checked_slice (null for a name that is not a client's)."""
    return pc.equal(pc.remainder(client_ids(files), SLICES), checked_slice)
