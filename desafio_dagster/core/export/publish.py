"""Publish a flat view as one CSV file per client, atomically. Pure: no Dagster.

Spark's partitionBy writer spends most of its time opening files (~55 s for
10,000 clients here), so each task writes its clients' files itself from Arrow
batches (mapInArrow). Every task attempt writes into a folder of its own and renames
each complete file into the version (store.py), so a file there is always whole and
retries and speculative attempts, which write the same bytes, never duplicate a row.
The driver holds what the tasks report, and the records, as Arrow tables.

Publication is write–audit–publish: the files go into a new hidden version (a folder,
or an S3 key prefix: store.py holds what differs between the two), each task scans its
files as it stores them (locally synced; on S3 sent with their MD5), the driver audits the version against the
source snapshot's own figures (audit.py), and only then publishes it: locally the
symlink OUTPUT/<name> is swapped to it with one rename, on S3 a pointer object naming
it is written last. Readers see the old
complete output or the new audited one; a failed audit keeps the rejected version
(the last one only) for inspection, and a failed or killed run never touches the
published one.
"""

from __future__ import annotations

import contextlib
import errno
import io
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import TaskContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from desafio_dagster.core import faults
from desafio_dagster.core.errors import PublishError, PublishOutcomeUnknown, TransientError, disk_full, first_line
from desafio_dagster.core.export.audit import AuditError, Finding, audit, failures
from desafio_dagster.core.export.extract import SourceReadError
from desafio_dagster.core.export.incremental import Plan
from desafio_dagster.core.export.transform import KEY_COLUMNS, RangeReader, SnapshotView
from desafio_dagster.core.output.layout import (
    CSV_COLUMNS,
    HEADER,
    client_file_names,
    matched,
    quoted,
    read_table,
    table_bytes,
)
from desafio_dagster.core.output.s3 import StoreUnavailable, read_s3_files
from desafio_dagster.core.output.store import Store
from desafio_dagster.core.output.task_output import open_attempt
from desafio_dagster.core.output.version import (
    FORMAT_FILE,
    INDEX_FILE,
    INDEX_SCHEMA,
    LOCATED_INDEX_SCHEMA,
    MANIFEST_FILE,
    READBACK_FILE,
    READBACK_SCHEMA,
    SOURCE_FILE,
    file_format,
    format_bytes,
    manifest_bytes,
    readback_bytes,
    source_bytes,
)
from desafio_dagster.core.progress import Stopwatch
from desafio_dagster.core.spark.sealed import unseal_into_environment
from desafio_dagster.core.spark.spark_session import spark_job_error, task_slots

_HEADER_BYTES = HEADER.encode()
# What a task reports of each client file it wrote: its _index.csv row, its scan as stored
# (version.SCAN_SCHEMA, the rows as scanned_rows), and the task's time on each phase spread over its files
# (summed, the tasks' total).
_SUMMARY_SCHEMA = pa.schema([*INDEX_SCHEMA, ("header_ok", pa.bool_()), ("scanned_rows", pa.int64()),
                             ("vlr_transacao_total", pa.decimal128(18, 2)), ("long_digit_run", pa.bool_()),
                             ("bytes", pa.int64()), ("mtime_ns", pa.int64()),  # as stored (mtime null on S3: listed)
                             ("write_seconds", pa.float64()), ("finish_seconds", pa.float64()),
                             ("scan_seconds", pa.float64())])
_SUMMARY_TYPE = from_arrow_schema(_SUMMARY_SCHEMA)  # the same, as Spark's mapInArrow takes it


class PublishedVersionChanged(PublishError, TransientError):
    """Another export published while this one ran: its plan no longer holds, so it starts again."""


@dataclass(frozen=True)
class Published:
    path: str  # where readers look: the published folder (a symlink to the version folder), or s3://…/<name>
    version: str  # the version's folder, or s3://…/<name>/.v-<token>
    version_name: str  # its name in the store (Store.published())
    index: pa.Table  # its _index.csv (version.INDEX_SCHEMA), by client id
    audit: list[Finding]
    seconds: dict[str, float]  # where the time went, by phase (cleanup, spark_job, tasks_*, carry, …)
    rewritten: int = 0  # client files written by this export
    carried: int = 0  # client files carried from the previous version (linked, or on S3 referenced)
    removed: int = 0  # client files of the previous version not in this one
    cleanup_failed: str = ""  # why removing older versions failed after publication (the next run retries)

    @property
    def rows(self) -> int:
        return pc.sum(self.index["rows"]).as_py() or 0


# Columns whose text can hold a comma, a quote or a line break; the others are
# numbers, dates, masked digits and enum labels, written as they are.
FREE_TEXT_COLUMNS = {"nome_associado", "sobrenome_associado", "des_transacao_movimento", "nome_impresso_cartao"}


def csv_lines(batch: pa.RecordBatch) -> pa.Array:
    """Each movement row as one RFC 4180 line ending in a newline; empty for a client without movements.

    Arrow compute, vectorised: a field holding a comma, a quote or a line break is quoted and its quotes doubled.
    """
    fields = []
    for name in CSV_COLUMNS:
        value = pc.fill_null(batch.column(name), "")
        if name in FREE_TEXT_COLUMNS:
            value = quoted(value)
        fields.append(value)
    line = pc.binary_join_element_wise(pc.binary_join_element_wise(*fields, ","), "\n", "")
    return pc.if_else(pc.is_valid(batch.column("movement_id")), line, "")


def _line_bytes(lines: pa.Array) -> tuple[np.ndarray, np.ndarray, memoryview]:
    """Byte offsets of each line, cumulative count of (non-empty) lines, and the bytes of all
    lines: the rows start..end are the bytes offsets[start]:offsets[end]."""
    lines = lines.cast(pa.large_string())
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    data = lines.buffers()[2]
    counted = np.r_[0, np.cumsum(np.diff(offsets) > 0)]
    return offsets, counted, memoryview(data if data is not None else b"")


def _task_writer(target: str, reader: RangeReader | None = None,
                 sealed: str = "") -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """mapInArrow function: write this partition's clients (rows sorted by client) into the version at target
    (Store.task_target: a local folder, or the S3 version; see open_attempt).
    With a reader, the partition holds range indexes: the task reads and joins those ranges itself.
    sealed: the task's credentials (sealed.py)."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        unseal_into_environment(sealed)  # once: the reader's and the store's credentials
        if reader is not None:
            batches = reader.joined(batches)
        context = TaskContext.get()
        assert context is not None, "runs in a Spark task"
        # Held until the task ends (or its process dies): the driver waits for it before removing the attempt.
        with open_attempt(target, context.partitionId(), context.taskAttemptId()) as attempt:
            summary: list[list] = []
            handle: io.BytesIO | None = None
            started = time.monotonic()
            try:
                for batch in batches:
                    ids = batch.column("client_id").to_numpy(zero_copy_only=False)
                    if len(ids) == 0:
                        continue
                    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
                    ends = np.r_[starts[1:], len(ids)]
                    offsets, counted, data = _line_bytes(csv_lines(batch))
                    firsts = batch.take(pa.array(starts))  # each client's first row: its names
                    names, surnames = (firsts.column(c).to_pylist() for c in ("nome_associado", "sobrenome_associado"))
                    file_names = client_file_names(firsts.column("client_id"), firsts.column("nome_associado"),
                                                   firsts.column("sobrenome_associado")).to_pylist()
                    for client, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
                        client_id = int(ids[start])
                        if not summary or summary[-1][0] != client_id:
                            if handle:
                                attempt.close(summary[-1][3], handle)
                                handle = None
                            nome, sobrenome, name = names[client], surnames[client], file_names[client]
                            handle = attempt.open(name)
                            handle.write(_HEADER_BYTES)
                            summary.append([client_id, nome, sobrenome, name, 0])
                        assert handle is not None  # opened for this client, above
                        handle.write(data[offsets[start] : offsets[end]])
                        summary[-1][4] += int(counted[end] - counted[start])
                if handle:
                    attempt.close(summary[-1][3], handle)
                    handle = None
            finally:
                if handle:  # a failed attempt: its unfinished file is dropped
                    handle.close()
            files = [row[3] for row in summary]
            finishing = time.monotonic()
            attempt.finish(files)  # in the version (renamed in, linked into a twin), durable before the driver publishes it
            if summary:
                reading = time.monotonic()
                scans = attempt.scans(files)  # as stored (on S3, checked by its MD5), in order, for the audit
                phases = [finishing - started, reading - finishing, time.monotonic() - reading]
                columns = list(zip(*summary))
                yield pa.RecordBatch.from_arrays(
                    [*(pa.array(values, field.type) for values, field in zip(columns, INDEX_SCHEMA)),
                     *(column.combine_chunks() for column in scans.columns), *attempt.stats(),
                     *(pa.array([seconds / len(summary)] * len(summary), pa.float64()) for seconds in phases)],
                    schema=_SUMMARY_SCHEMA)

    # What the plan, Spark's UI and its event log show for the stage.
    write.__name__ = "read_join_and_write_client_files" if reader is not None else "write_client_files"
    return write


class _Progress:
    """Spark Connect's progress of the running job as (tasks done, tasks known, seconds), passed on at most
    every few seconds while it runs, and once when it is done: Connect sends progress every few seconds,
    so a short job may end before it sent any, and finished(tasks) then reports the end itself."""

    def __init__(self, on_progress: Callable[[int, int, float], None] | None, every: float = 5.0):
        self.on_progress, self.every = on_progress, every
        self.started = self.last = time.monotonic()
        self.ended = False

    def __call__(self, stages: Any, inflight_tasks: int, operation_id: str | None, done: bool) -> None:
        now = time.monotonic()
        stages = list(stages or [])
        if stages and (done or now - self.last >= self.every):
            self.last, self.ended = now, self.ended or (done and all(s.done for s in stages))
            self._report(sum(s.num_completed_tasks for s in stages), sum(s.num_tasks for s in stages))

    def finished(self, tasks: int | None) -> None:
        """The job succeeded with `tasks` tasks (None: unknown): its end, unless Connect reported it."""
        if not self.ended and tasks:
            self.ended = True
            self._report(tasks, tasks)

    def _report(self, done: int, known: int) -> None:
        if self.on_progress is not None:
            self.on_progress(done, known, time.monotonic() - self.started)


@contextlib.contextmanager
def _reporting(spark: Any, on_progress: Callable[[int, int, float], None] | None) -> Iterator[_Progress]:
    """While the body runs, report the progress of its Spark jobs (see _Progress)."""
    handler = _Progress(on_progress)
    if on_progress is not None:
        spark.registerProgressHandler(handler)
    try:
        yield handler
    finally:
        if on_progress is not None:
            spark.removeProgressHandler(handler)


def publish_per_client(
    view: DataFrame | SnapshotView | None,
    store: Store,
    expected: pa.Table,
    masked: bool = True,
    by_client: bool = False,
    on_progress: Callable[[int, int, float], None] | None = None,
    plan: Plan | None = None,
    sealed: str | None = None,
    source: str | None = None,
) -> Published:
    """Write view (see transform.snapshot_view) as a new version of the per-client files plus _index.csv
    in store (a local folder or S3: store.py), audit it against expected (the source snapshot's
    figures, version.FIGURES_SCHEMA) and publish it.

    by_client: a DataFrame view already holds each client's rows in one partition, sorted (as
    SnapshotView.frame() does), so it is written as it is instead of shuffled by client and sorted first. A
    SnapshotView is written by its own tasks: each reads, joins and writes its range of clients.
    plan: an incremental export (incremental.plan_export): view holds the rewritten clients only (None
    if there are none) and plan's carried files are carried from the published version, which must still
    be plan.published; plan.format is recorded in the version's _format.json.
    source: the source snapshot expected was computed in (journal.current_snapshot), recorded in _source.json.

    A failed audit raises AuditError, keeps the rejected version (locally at output/.<name>.rejected-*)
    and publishes nothing. on_progress(tasks done, tasks, seconds) is called every few seconds while Spark writes.
    sealed: the tasks' credentials (sealed.py); a SnapshotView's own by default.
    The driver's work is in Arrow, column at a time: nothing per client but the carried files' links
    (on S3, nothing: the index names the version that holds each carried file)."""
    store.check_writable()
    carry_index, carry_records = (plan.carry_index, plan.carry_records) if plan else (
        INDEX_SCHEMA.empty_table(), READBACK_SCHEMA.empty_table())
    fmt = plan.format if plan else file_format("", masked)
    watch = Stopwatch()
    with store.exclusive(), ThreadPoolExecutor(max_workers=2) as records_pool:
        current = store.published()
        if plan and len(carry_index) and current != plan.published:
            raise PublishedVersionChanged(f"{store.uri()} was published again while this export ran (it points at "
                                          f"{current}, not {plan.published}): the export starts again from a fresh plan")
        with watch("cleanup"):  # an older version is spared to be recycled into this one (LocalStore.open_version)
            store.remove_leftovers(keep={current} if current else set(), spare=bool(len(carry_index)))
        token = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        version = store.version_name(token)
        with store.leased(version):  # on S3: spared by other exports' cleanups while this one writes it
            pending: list = []  # records being written by records_pool
            try:
                with watch("carry"):  # the same bytes: audited when they were written
                    store.open_version(version, plan.published if plan and len(carry_index) else None, carry_records)
                with watch("spark_job"):
                    written = _SUMMARY_SCHEMA.empty_table() if view is None else _write(
                        view, store.task_target(version), by_client, on_progress, sealed)
                    store.drop_attempts(version)
                faults.reached("tasks")
                for phase in ("write", "finish", "scan"):  # summed over the tasks, which run in parallel
                    watch.add(f"tasks_{phase}", pc.sum(written[f"{phase}_seconds"]).as_py() or 0.0)
                index = pa.concat_tables([written.select(INDEX_SCHEMA.names), carry_index]).sort_by("client_id")
                ids = index["client_id"].to_numpy()
                twice = ids[1:][ids[1:] == ids[:-1]]
                if len(twice):
                    raise PublishError(f"client {twice[0]} was written twice: the view is not one row set per client")
                if not len(index):
                    raise PublishError("the view has no clients: nothing to publish; the previous output is untouched")
                # Each file's size and mtime as its task stored it or as its record says (null where the listing gives them).
                scanned = pa.concat_tables([pa.table({
                    "file": written["file"], "bytes": written["bytes"], "mtime_ns": written["mtime_ns"],
                    "written_in": pa.array([version] * len(written), pa.string()),
                    "header_ok": written["header_ok"], "rows": written["scanned_rows"],
                    "vlr_transacao_total": written["vlr_transacao_total"], "long_digit_run": written["long_digit_run"],
                }), carry_records.select(READBACK_SCHEMA.names)]).sort_by("file")  # in the listing's order: aligned
                del written  # a million rows at 1M clients: not held through the records and the audit
                # The index and the snapshot's figures are written by two threads while the version is listed and its
                # _readback.arrow made (Arrow releases the GIL).
                with watch("records"):
                    # Where files may stay in earlier versions, each index row names the version that holds its file.
                    listed = index.append_column("version", matched(index["file"], scanned)["written_in"]) \
                        if store.by_reference else index
                    pending = [records_pool.submit(lambda: store.write(version, INDEX_FILE, table_bytes(listed))),
                               records_pool.submit(lambda: store.write(version, MANIFEST_FILE, manifest_bytes(expected)))]
                    store.write(version, FORMAT_FILE, format_bytes(fmt))
                    store.write(version, SOURCE_FILE, source_bytes(source))
                # The client set from the version itself (one listing of names; the files it holds by reference as their
                # records say): a file the summaries missed is still judged. Each file's size and mtime for _readback.arrow:
                # from the listing where it gives them (S3), else as its task stored it or as its record says.
                with watch("listing"):
                    clients = store.with_held(version, store.files(version, stats_of=[]), carry_records).client_files()
                    known = matched(clients["file"], scanned)  # each listed file's scan, nulls where none came
                    reported = pc.is_valid(known["file"])
                    missed = pc.filter(clients["file"], pc.invert(reported)).to_pylist()
                    scans = store.scan(version, missed).add_column(0, "file", pa.array(missed, pa.string()))
                with watch("records"):
                    records = known.filter(reported)
                    listed_stats = clients.filter(reported)
                    for column in ("bytes", "mtime_ns"):
                        records = records.set_column(records.schema.get_field_index(column), column,
                                                     pc.coalesce(listed_stats[column], records[column]))
                    for written_record in pending:  # _readback.arrow last: the version's records are then all there
                        written_record.result()
                    store.write(version, READBACK_FILE, readback_bytes(records))
                    store.sync(version, [INDEX_FILE, MANIFEST_FILE, FORMAT_FILE, SOURCE_FILE, READBACK_FILE])
                faults.reached("records")
                with watch("audit"):
                    findings = audit(pa.concat_tables([records.select(scans.column_names), scans]), expected, masked)
                if failures(findings):
                    rejected = store.reject(version, token)
                    raise AuditError(f"{failures(findings)}. Nothing was published; the previous output is untouched; "
                                     f"the rejected version is kept for inspection at {rejected}")
                faults.reached("audit")
                with watch("publish"):
                    previous = store.publish(version, replacing=current)
            except (AuditError, PublishOutcomeUnknown):  # kept: for inspection, or because it may be the published one
                raise
            except BaseException as error:
                for written_record in pending:  # no record written into the version once it is discarded
                    written_record.cancel() or written_record.exception()
                store.discard(version)
                if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise PublishError(disk_full(first_line(error))) from None
                raise
        faults.reached("publish")
        cleanup = ""
        with watch("cleanup"):
            try:  # published already: a failed cleanup is the next run's to finish, not this run's failure
                store.remove_leftovers(keep={kept for kept in (version, previous, store.finish_twin(version)) if kept})
            except Exception as error:
                cleanup = first_line(error)
        faults.reached("cleanup")
    return Published(path=store.uri(), version=store.uri(version), version_name=version, index=index, audit=findings,
                     seconds=watch.seconds, rewritten=len(index) - len(carry_index), carried=len(carry_index),
                     removed=len(plan.removed) if plan else 0, cleanup_failed=cleanup)


def published_as_is(store: Store, plan: Plan) -> Published:
    """The version the store publishes, kept as it is because plan found nothing to change."""
    version = store.published()
    if version is None or version != plan.published:
        raise PublishedVersionChanged(f"{store.uri()} was published again while this export ran: the export starts again")
    index = plan.carry_index.sort_by("client_id")
    return Published(path=store.uri(), version=store.uri(version), version_name=version, index=index, audit=[],
                     seconds={}, carried=len(index))


def _write(view: DataFrame | SnapshotView, target: str, by_client: bool,
           on_progress: Callable[[int, int, float], None] | None, sealed: str | None) -> pa.Table:
    """Run the Spark job that writes the view's clients to target: one summary per client file (_SUMMARY_SCHEMA),
    by client id. The summaries come back as one Arrow table (no Row object per client on the driver)."""
    tasks = None  # known for a SnapshotView: one task per range of clients
    spark: Any  # a Spark Connect session (pyspark types a DataFrame's as the classic one)
    if isinstance(view, SnapshotView):  # read, join and write in one Python function per task
        tasks = view.partitions
        writer = _task_writer(target, view.reader, view.reader.sealed if sealed is None else sealed)
        spark, job = view.spark, view.indexes().mapInArrow(writer, _SUMMARY_TYPE)
    else:
        spark, prepared = view.sparkSession, view.select(*KEY_COLUMNS, *CSV_COLUMNS)
        if not by_client:
            prepared = prepared.repartition(max(2, task_slots(spark) * 2), "client_id")
            prepared = prepared.sortWithinPartitions("client_id", "movement_time", "movement_id")
        job = prepared.mapInArrow(_task_writer(target, sealed=sealed or ""), _SUMMARY_TYPE)
    with _reporting(spark, on_progress) as progress:
        try:
            table = job.toArrow()
        except Exception as error:  # grpc and PySpark raise many kinds
            for kind in (SourceReadError, StoreUnavailable):  # a task's transient fault, explained in the task
                if found := re.search(rf"{kind.__name__}: (.+)", str(error)):
                    raise kind(f"{found.group(1).strip()}; nothing was published") from None
            raise spark_job_error(error, "writing the client files") from None
        progress.finished(tasks)
    return table.cast(_SUMMARY_SCHEMA).sort_by("client_id")


_PUBLISHED_SCHEMA = "client_id long, " + ", ".join(f"`{name}` string" for name in CSV_COLUMNS)


def _file_reader(uri: str, sealed: str) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """mapInArrow function: the rows of the batches' client files (column file: a key under uri) as text."""

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        unseal_into_environment(sealed)
        import pyarrow.csv as pa_csv

        options = dict(
            read_options=pa_csv.ReadOptions(column_names=list(CSV_COLUMNS), skip_rows=1, use_threads=False),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(column_types={c: pa.string() for c in CSV_COLUMNS},
                                                  strings_can_be_null=True, null_values=[""]))
        for batch in batches:
            files = batch.column("file").to_pylist()
            for file, data in zip(files, read_s3_files(uri, files)):
                table = pa_csv.read_csv(pa.py_buffer(data), **options) if data.count(b"\n") > 1 or not data.endswith(b"\n") \
                    else pa.table({c: pa.array([], pa.string()) for c in CSV_COLUMNS})
                ids = pa.array([int(file.rsplit("/", 1)[-1][:8])] * table.num_rows, pa.int64())
                yield pa.RecordBatch.from_arrays([ids, *(table.column(c).combine_chunks() for c in CSV_COLUMNS)],
                                                 names=["client_id", *CSV_COLUMNS])

    return read


def read_published(spark: Any, store: Store, sealed: str = "") -> DataFrame:
    """The published per-client files of store as one DataFrame: client_id, then CSV_COLUMNS as text.

    The published version is resolved once, so the reader sees one complete version. Spark reads a local version
    itself; an S3 version (Spark has no S3 connector here) is read by the tasks with pyarrow (mapInArrow over the
    version's file list)."""
    version = store.published()
    if version is None or INDEX_FILE not in store.files(version):
        raise PublishError(f"no published output at {store.uri()}: run the export job first")
    local = store.local_folder(version)
    if local is None:  # each file where the index says: in this version, or one it carries files from
        index = read_table(store.read(version, INDEX_FILE), LOCATED_INDEX_SCHEMA)
        holders = index["version"] if "version" in index.column_names else pa.array([version] * len(index))
        keys = [(key,) for key in pc.binary_join_element_wise(holders, index["file"], "/").to_pylist()]
        names = spark.createDataFrame(keys, "file string")
        names = names.repartition(max(1, min(len(keys) // 200, task_slots(spark) * 2)))
        return names.mapInArrow(_file_reader(store.uri(), sealed), _PUBLISHED_SCHEMA)
    schema = ", ".join(f"`{name}` string" for name in CSV_COLUMNS)
    frame = spark.read.csv(  # the folder, not a glob: Spark skips _index.csv and lists 10,000 files fast
        f"file://{local}", schema=schema, header=True, quote='"', escape='"', multiLine=True, encoding="UTF-8"
    )
    client_id = F.regexp_extract(F.input_file_name(), r"/(\d+)_[^/]*\.csv$", 1).cast("long")
    return frame.select(client_id.alias("client_id"), *CSV_COLUMNS)
