"""Publish a flat view as one CSV file per client, atomically. Pure: no Dagster.

Spark's partitionBy writer spends most of its time opening files (~55 s for
10,000 clients here), so each task writes its clients' files itself from Arrow
batches (mapInArrow). Every task attempt writes into a folder of its own; the
driver keeps only the files of the attempts whose results Spark accepted, so
retries and speculative attempts never duplicate a row.

Publication is write–audit–publish: the files go into a new hidden version folder,
each task reads its files back and syncs them (file and folder) to disk, the driver
audits the version against the source snapshot's own figures (audit.py), and only
then swaps the symlink OUTPUT/<name> to it with one rename. Readers see the old
complete output or the new audited one; a failed audit keeps the rejected version
(the last one only) for inspection, and a failed or killed run never touches the
published one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import TaskContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from desafio_dagster.core.audit import (
    MANIFEST_FILE,
    AuditError,
    ClientFigures,
    FileScan,
    Finding,
    audit,
    failures,
    scan_file,
    scan_files,
    write_manifest,
)
from desafio_dagster.core.errors import DesafioError, TransientError, first_line
from desafio_dagster.core.extract import SourceReadError
from desafio_dagster.core.incremental import (
    FORMAT_FILE,
    READBACK_FILE,
    Plan,
    ReadBack,
    file_format,
    write_format,
    write_readback,
)
from desafio_dagster.core.layout import (
    CSV_COLUMNS,
    HEADER,
    INDEX_FILE,
    ClientFile,
    client_file_name,
    read_index,
    write_index,
)
from desafio_dagster.core.transform import KEY_COLUMNS

_HEADER_BYTES = HEADER.encode()
_SUMMARY_SCHEMA = ("client_id long, nome string, sobrenome string, file string, rows long, attempt_dir string, "
                   "header_ok boolean, scanned_rows long, scanned_total string, long_digit_run boolean, scan_seconds double")


class PublishError(DesafioError):
    """The output could not be published; the previous output is untouched."""


class SparkWriteError(PublishError, TransientError):
    """The Spark job writing the files failed (e.g. an executor was lost): worth another attempt."""


class PublishedVersionChanged(PublishError, TransientError):
    """Another export published while this one ran: its plan no longer holds, so it starts again."""


@dataclass(frozen=True)
class Published:
    path: Path  # the published folder (a symlink to the version folder)
    version: Path
    files: list[ClientFile]
    audit: list[Finding]
    audit_seconds: float  # the driver's share: listing the version and comparing with the snapshot
    readback_seconds: float  # the tasks' share, summed over tasks: reading their files back
    rewritten: int = 0  # client files written by this export
    carried: int = 0  # client files linked from the previous version
    removed: int = 0  # client files of the previous version not in this one

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


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
            quoted = pc.binary_join_element_wise('"', pc.replace_substring(value, '"', '""'), '"', "")
            value = pc.if_else(pc.match_substring_regex(value, '[",\r\n]'), quoted, value)
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


def _task_writer(staging: str):
    """mapInArrow function: write this partition's clients (rows sorted by client) to files."""

    def write(batches):
        context = TaskContext.get()
        folder = Path(staging) / f"part-{context.partitionId():05d}-attempt-{context.taskAttemptId()}"
        folder.mkdir(parents=True, exist_ok=True)
        summary: list[list] = []
        handle = None
        try:
            for batch in batches:
                ids = batch.column("client_id").to_numpy(zero_copy_only=False)
                if len(ids) == 0:
                    continue
                starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
                ends = np.r_[starts[1:], len(ids)]
                offsets, counted, data = _line_bytes(csv_lines(batch))
                names, surnames = batch.column("nome_associado"), batch.column("sobrenome_associado")
                for start, end in zip(starts.tolist(), ends.tolist()):
                    client_id = int(ids[start])
                    if not summary or summary[-1][0] != client_id:
                        if handle:
                            handle.close()
                        nome, sobrenome = names[start].as_py(), surnames[start].as_py()
                        name = client_file_name(client_id, nome, sobrenome)
                        handle = open(folder / name, "wb")
                        handle.write(_HEADER_BYTES)
                        summary.append([client_id, nome, sobrenome, name, 0, str(folder)])
                    handle.write(data[offsets[start] : offsets[end]])
                    summary[-1][4] += int(counted[end] - counted[start])
        finally:
            if handle:
                handle.close()
        if summary:
            paths = [folder / row[3] for row in summary]
            with ThreadPoolExecutor(max_workers=8) as pool:  # fsync waits on the disk, not the GIL
                list(pool.map(_fsync, [*paths, folder]))  # on disk before the driver links them in
            reading = time.monotonic()
            scans = scan_files(paths)  # read back for the audit
            scan_seconds = (time.monotonic() - reading) / len(summary)  # this task's, spread over its files
            columns = list(zip(*summary))
            yield pa.RecordBatch.from_arrays(
                [pa.array(columns[0], pa.int64()), pa.array(columns[1], pa.string()), pa.array(columns[2], pa.string()),
                 pa.array(columns[3], pa.string()), pa.array(columns[4], pa.int64()), pa.array(columns[5], pa.string()),
                 pa.array([s.header_ok for s in scans], pa.bool_()), pa.array([s.rows for s in scans], pa.int64()),
                 pa.array([None if s.total is None else str(s.total) for s in scans], pa.string()),
                 pa.array([s.long_digit_run for s in scans], pa.bool_()), pa.array([scan_seconds] * len(summary))],
                names=["client_id", "nome", "sobrenome", "file", "rows", "attempt_dir",
                       "header_ok", "scanned_rows", "scanned_total", "long_digit_run", "scan_seconds"],
            )

    return write


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk (where the process that wrote it runs)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)




@contextlib.contextmanager
def _exclusive(lock_file: Path):
    """One publisher at a time per output folder (POSIX flock; elsewhere, no lock)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _writable_output(output_dir: Path) -> Path:
    output_dir = output_dir.resolve()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-probe-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise PublishError(
            f"output folder {output_dir} is not writable ({error.strerror or error}): fix its permissions "
            f"or set DESAFIO_OUTPUT_DIR to a writable folder; the previous output is untouched"
        ) from None
    return output_dir


def _swap(link: Path, target_name: str) -> Path | None:
    """Point link at target_name with one atomic rename; return the previous target."""
    temporary = link.parent / f".{link.name}.link-{uuid.uuid4().hex[:8]}"
    try:
        temporary.symlink_to(target_name)
        previous = None
        if link.is_symlink():
            previous = link.parent / os.readlink(link)
        elif link.exists():  # a real folder from elsewhere: keep it as the previous version
            previous = link.parent / f".{link.name}.v-replaced-{uuid.uuid4().hex[:8]}"
            link.rename(previous)
        os.replace(temporary, link)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise PublishError(
            f"could not publish {link} ({error.strerror or error}): the output folder must allow symlinks "
            f"and renames; the previous output is untouched"
        ) from None
    return previous


def _remove_leftovers(output_dir: Path, name: str, keep: set[Path]) -> None:
    """Staging folders of killed runs and versions older than the previous one (the last
    rejected version stays for inspection)."""
    for path in output_dir.glob(f".{name}.*"):
        if path.resolve() in keep or path.name.endswith(".lock") or path.name.startswith(f".{name}.rejected-"):
            continue
        if path.is_symlink() or path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _reporting(spark_context, on_progress: Callable[[int, int, float], None] | None, every: float = 5.0):
    """While the body runs, report (tasks done, tasks known, seconds) of Spark's active stages."""
    if on_progress is None:
        yield
        return
    stop, started, tracker = threading.Event(), time.monotonic(), spark_context.statusTracker()
    first_job = max(tracker.getJobIdsForGroup(None) or [-1]) + 1

    def report(stage_ids) -> None:
        stages = [s for s in map(tracker.getStageInfo, stage_ids) if s is not None]
        if stages:
            on_progress(sum(s.numCompletedTasks for s in stages), sum(s.numTasks for s in stages),
                        time.monotonic() - started)

    def every_few_seconds():
        while not stop.wait(every):
            report(tracker.getActiveStageIds())

    thread = threading.Thread(target=every_few_seconds, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    # Once more at the end, whatever the body's length: the last job's stages, all done.
    jobs = [job for job in tracker.getJobIdsForGroup(None) if job >= first_job]
    if jobs and (info := tracker.getJobInfo(max(jobs))) is not None:
        report(info.stageIds)


def publish_per_client(
    view: DataFrame | None,
    output_dir: Path | str,
    expected: dict[str, ClientFigures],
    name: str = "movements_csv",
    masked: bool = True,
    by_client: bool = False,
    on_progress: Callable[[int, int, float], None] | None = None,
    plan: Plan | None = None,
) -> Published:
    """Write view (see transform.flat_view) as output_dir/name/<client>.csv plus _index.csv, audit it
    against expected (the source snapshot's figures, audit.expected_figures) and publish it.

    by_client: the view already holds each client's rows in one partition (a view of the tables as
    extract.read_tables reads them), so it is sorted where it is instead of shuffled by client first.
    plan: an incremental export (incremental.plan_export): view holds the rewritten clients only (None
    if there are none) and plan.carry's files are linked from the published version, which must still
    be plan.published; plan.format is recorded in the version's _format.json.

    A failed audit raises AuditError, keeps the rejected version at output_dir/.<name>.rejected-* and
    publishes nothing. on_progress(tasks done, tasks, seconds) is called every few seconds while Spark writes."""
    output_dir = _writable_output(Path(output_dir))
    link = output_dir / name
    carry = plan.carry if plan else {}
    fmt = plan.format if plan else file_format("", masked)
    with _exclusive(output_dir / f".{name}.lock"):
        current = link.resolve() if link.is_symlink() else None
        if carry and current != plan.published:
            raise PublishedVersionChanged(f"{link} was published again while this export ran (it points at {current}, "
                                          f"not {plan.published}): the export starts again from a fresh plan")
        _remove_leftovers(output_dir, name, keep={current} if current else set())
        token = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        staging = output_dir / f".{name}.staging-{token}"
        version = output_dir / f".{name}.v-{token}"
        try:
            summaries = [] if view is None else _write(view, str(staging), by_client, on_progress)
            version.mkdir()
            files, scans, records = [], {}, {}
            for row in summaries:
                os.rename(Path(row.attempt_dir) / row.file, version / row.file)
                files.append(ClientFile(row.client_id, row.nome, row.sobrenome, row.file, row.rows))
                total = None if row.scanned_total is None else Decimal(row.scanned_total)
                scans[row.file] = FileScan(row.header_ok, row.scanned_rows, total, row.long_digit_run)
                records[row.file] = ReadBack.of(version / row.file, scans[row.file], version.name)
            for file, carried in carry.items():  # the same inode: audited when it was written
                os.link(carried.source, version / file)
                files.append(carried.entry)
                scans[file], records[file] = carried.record.scan, carried.record
            files.sort(key=lambda f: f.client_id)
            twice = [a.client_id for a, b in zip(files, files[1:]) if a.client_id == b.client_id]
            if twice:
                raise PublishError(f"client {twice[0]} was written twice: the view is not one row set per client")
            if not files:
                raise PublishError("the view has no clients: nothing to publish; the previous output is untouched")
            write_index(version / INDEX_FILE, files)
            audit_started = time.monotonic()
            write_manifest(version / MANIFEST_FILE, expected)
            write_format(version / FORMAT_FILE, fmt)
            write_readback(version / READBACK_FILE, records)
            for path in (version / INDEX_FILE, version / MANIFEST_FILE, version / FORMAT_FILE, version / READBACK_FILE,
                         version):
                _fsync(path)
            # The client set from the folder itself: a file the summaries missed is still judged.
            listed = {p.name for p in version.iterdir() if not p.name.startswith("_")}
            scans |= {n: scan_file(version / n) for n in listed - scans.keys()}
            findings = audit({n: scans[n] for n in listed}, expected, masked)
            audit_seconds = time.monotonic() - audit_started
            if failures(findings):
                rejected = _reject(output_dir, name, version, token)
                raise AuditError(f"{failures(findings)}. Nothing was published; the previous output is untouched; "
                                 f"the rejected version is kept for inspection at {rejected}")
            previous = _swap(link, version.name)
            _fsync(output_dir)
        except BaseException:
            shutil.rmtree(version, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _remove_leftovers(output_dir, name, keep={version.resolve(), previous.resolve() if previous else None})
    return Published(path=link, version=version, files=files, audit=findings, audit_seconds=audit_seconds,
                     readback_seconds=sum(row.scan_seconds for row in summaries), rewritten=len(summaries),
                     carried=len(carry), removed=len(plan.removed) if plan else 0)


def published_as_is(link: Path, plan: Plan) -> Published:
    """The version published at link, kept as it is because plan found nothing to change."""
    version = link.resolve()
    if version != plan.published:
        raise PublishedVersionChanged(f"{link} was published again while this export ran: the export starts again")
    files = sorted(read_index(version / INDEX_FILE).values(), key=lambda f: f.client_id)
    return Published(path=link, version=version, files=files, audit=[], audit_seconds=0.0, readback_seconds=0.0,
                     carried=len(files))


def _write(view: DataFrame, staging: str, by_client: bool, on_progress) -> list:
    """Run the Spark job that writes the view's clients into staging: one summary row per client file."""
    prepared = view.select(*KEY_COLUMNS, *CSV_COLUMNS)
    if not by_client:
        prepared = prepared.repartition(max(2, view.sparkSession.sparkContext.defaultParallelism * 2), "client_id")
    prepared = prepared.sortWithinPartitions("client_id", "movement_time", "movement_id")
    with _reporting(view.sparkSession.sparkContext, on_progress):
        try:
            return sorted(prepared.mapInArrow(_task_writer(staging), _SUMMARY_SCHEMA).collect(), key=lambda r: r.client_id)
        except Exception as error:  # Py4J and PySpark raise many kinds
            read_error = re.search(r"SourceReadError: (.+)", str(error))
            if read_error:  # a task could not read the source: explained in the task
                raise SourceReadError(f"{read_error.group(1).strip()}; nothing was published") from None
            raise SparkWriteError(
                f"the Spark job writing the client files failed: {first_line(error)}; "
                f"the previous output is untouched (Spark's log above has the details)"
            ) from error


def _reject(output_dir: Path, name: str, version: Path, token: str) -> Path:
    """Keep a version that failed its audit, beside the output, in place of the previous rejected one."""
    for old in output_dir.glob(f".{name}.rejected-*"):
        shutil.rmtree(old, ignore_errors=True)
    rejected = output_dir / f".{name}.rejected-{token}"
    version.rename(rejected)
    return rejected


def read_published(spark, folder: Path | str) -> DataFrame:
    """The published per-client files as one DataFrame: client_id, then CSV_COLUMNS as text.

    The folder's symlink is resolved once, so the reader sees one complete version.
    """
    version = Path(folder).resolve()
    if not (version / INDEX_FILE).exists():
        raise PublishError(f"no published output at {folder}: run the export job first")
    schema = ", ".join(f"`{name}` string" for name in CSV_COLUMNS)
    frame = spark.read.csv(  # the folder, not a glob: Spark skips _index.csv and lists 10,000 files fast
        f"file://{version}", schema=schema, header=True, quote='"', escape='"', multiLine=True, encoding="UTF-8"
    )
    client_id = F.regexp_extract(F.input_file_name(), r"/(\d+)_[^/]*\.csv$", 1).cast("long")
    return frame.select(client_id.alias("client_id"), *CSV_COLUMNS)
