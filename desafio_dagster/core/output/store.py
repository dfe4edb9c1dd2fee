"""Where the versions of the per-client files live: a local folder, or an S3 bucket and prefix. Pure: no Dagster.

publish.py holds the one publication protocol (write, scan, audit, publish, clean up) and
incremental.py the one plan; a Store holds only what differs between the two backends, on the driver. What the
Spark tasks write to is task_output.py (it runs in Spark's Python workers); the S3 requests both make, s3.py.

| operation               | LocalStore (DESAFIO_OUTPUT_DIR=/a/folder)     | S3Store (DESAFIO_OUTPUT_DIR=s3://bucket/prefix)   |
|-------------------------|-----------------------------------------------|---------------------------------------------------|
| a version               | folder OUTPUT/.<name>.v-<token>/              | keys  prefix/<name>/.v-<token>/...                |
| a task writes a file    | into its attempt's folder in the version, then| straight into the version, one PUT per complete   |
|                         | renamed into the version once complete (a     | file with its Content-MD5 (a retried attempt PUTs |
|                         | retry renames the same bytes); one syncfs     | the same bytes; a failed one's unfinished file is |
|                         |                                               | never sent)                                       |
| the audit's scan        | the bytes as stored (the checks read back)    | the bytes as sent (S3 checked their MD5)          |
| stat (for _readback)    | size and mtime_ns                              | size and LastModified, from one LIST              |
| carry an unchanged file | hard link, into the recycled folder of the     | nothing: it stays where an earlier version wrote   |
|                         | version before the published one (only the     | it, and the index's `version` column names that    |
|                         | files changed over two exports are linked)     | version (no request per unchanged client)          |
| publish                 | symlink OUTPUT/<name> swapped by one rename    | pointer object prefix/<name>/_published holding   |
|                         |                                                | the version's name, written last                  |
| keep a rejected version | renamed .<name>.rejected-<token>               | named by the object prefix/<name>/_rejected       |
| one publisher at a time | flock on OUTPUT/.<name>.lock, from the cleanup | the pointer written by a compare-and-swap (a PUT  |
|                         | before the export to the swap                  | with If-Match/If-None-Match): of two, one wins    |
| a version being written | under the lock: no other export cleans up      | a lease, prefix/<name>/.v-<token>/_lease, renewed |
|                         |                                                | while it is written: other exports' cleanups spare|
|                         |                                                | it until it lapses (a killed run's lapses)        |

Versions are named by strings (their folder or key prefix name); a reader resolves the published one
once and reads only that version: on S3, its _index.csv names the version holding each file.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from desafio_dagster.core.errors import PublishError, PublishOutcomeUnknown, PublishRaceLost
from desafio_dagster.core.export.audit import scan_many
from desafio_dagster.core.output.layout import client_ids, in_order, unshared_files
from desafio_dagster.core.output.s3 import (
    AWS_VARIABLES,
    content_md5,
    no_bucket,
    read_s3_files,
    s3_client,
    s3_error,
    s3_filesystem,
    s3_get,
    s3_read,
    server_time,
)
from desafio_dagster.core.output.task_output import ATTEMPTS_FOLDER, TWIN_SUFFIX, fsync, twin_of
from desafio_dagster.core.output.version import (
    EARLIER_NAMES,
    FORMAT_FILE,
    HELD_SCHEMA,
    INDEX_FILE,
    LEASE_FILE,
    MANIFEST_FILE,
    POINTER_FILE,
    READBACK_FILE,
    REJECTED_FILE,
    SOURCE_FILE,
    parse_readback,
    with_earlier,
)
from desafio_dagster.core.settings import OutputLocation, environment

STALE_FOLDER = ".stale"  # in a recycled version: its files that differ, set aside (LocalStore.open_version)


def race_lost(uri: str, expected: str | None, found: str | None) -> PublishRaceLost:
    return PublishRaceLost(
        f"another export published {uri} while this one ran (it now names {found or 'no version'}, not "
        f"{expected or 'no version'}): this run published nothing and removed its version. Two exports wrote to "
        f"one output at once: run one at a time (within one deployment, Dagster's pool source_database does)")


@dataclass(frozen=True)
class Listing:
    """A version's files from one listing: name, size and modification time of each (what tells a file
    changed since it was read back), as an Arrow table of file, bytes, mtime_ns, by name."""

    table: pa.Table

    @classmethod
    def of(cls, infos: list) -> Listing:
        """From pyarrow FileInfos (a local or an S3 listing): the files only (a million in 0.3 s: one pass per
        attribute, no FileType enum per entry)."""
        table = pa.table({"file": pa.array([i.base_name for i in infos], pa.string()),
                          "bytes": pa.array([i.size for i in infos], pa.int64()),
                          "mtime_ns": pa.array([i.mtime_ns or 0 for i in infos], pa.int64()),
                          "is_file": pa.array([i.is_file for i in infos], pa.bool_())})
        return cls(table.filter(table["is_file"]).drop_columns("is_file").sort_by("file"))

    @classmethod
    def empty(cls) -> Listing:
        return cls.of([])

    def __contains__(self, file: str) -> bool:
        return pc.any(pc.equal(self.table["file"], file)).as_py() or False

    def with_files(self, files: pa.Table) -> Listing:
        """This listing and files (file, bytes, mtime_ns: e.g. the records of files a version holds by
        reference, as they were listed when written)."""
        added = files.select(self.table.column_names).cast(self.table.schema)
        return Listing(pa.concat_tables([self.table, added]).sort_by("file"))

    def client_files(self) -> pa.Table:
        """The client files: every file but the version's records (whose names start with _)."""
        return self.table.filter(pc.invert(pc.starts_with(self.table["file"], "_")))


class Store(ABC):
    """The versions of one asset's per-client files (name: the asset, e.g. movements_csv)."""

    name: str
    # Whether a version holds the files it carries by reference (they stay in the version that wrote
    # them, named by its records' written_in) instead of in its own folder.
    by_reference: bool = False
    # The checks read again every n-th file (by name) of those their run wrote. On a disk, every one. On S3,
    # where each PUT was checked against its MD5 and scanned as sent, every tenth: a GET each.
    reread_every: int = 1

    @abstractmethod
    def uri(self, version: str | None = None, file: str = "") -> str:
        """Where the published output (no version), a version, or a version's file is, for people."""

    @abstractmethod
    def version_name(self, token: str) -> str: ...

    @abstractmethod
    def check_writable(self) -> None:
        """Raise PublishError, naming what to fix, if versions cannot be written."""

    @abstractmethod
    def exclusive(self) -> contextlib.AbstractContextManager:
        """One publisher at a time, where the store can enforce it."""

    @abstractmethod
    def published(self) -> str | None:
        """The published version's name (resolved once), or None."""

    @abstractmethod
    def open_version(self, version: str, source: str | None = None, carried: pa.Table | None = None) -> None:
        """Make a new version holding source's carried files (carried: their records, file and written_in), the
        same bytes, not read here (where the store holds files by reference, nothing: the new version's records
        name where they are)."""

    def finish_twin(self, version: str) -> str | None:
        """Once version is published: complete the twin of its files that its tasks made (LocalStore, a full
        export), which the next export recycles; the twin's name, or None if there is none."""
        return None

    def leased(self, version: str) -> contextlib.AbstractContextManager:
        """Held while the export writes version, until it is published or discarded: other exports' cleanups spare
        it. Locally the output's lock (exclusive) already keeps every other export out."""
        return contextlib.nullcontext()

    @abstractmethod
    def task_target(self, version: str) -> str:
        """What the Spark tasks write to (see open_attempt): a string, holding no secret."""

    @abstractmethod
    def drop_attempts(self, version: str) -> None:
        """Remove what failed task attempts left in the version, once the Spark job is done (locally, wait too
        for the removal of the stale files open_version set aside)."""

    @abstractmethod
    def files(self, version: str, stats_of: list[str] | None = None) -> Listing:
        """Every file of a version (one listing). stats_of: only those files' sizes and mtimes are needed (the
        others' may be null): locally the others are not stat'ed, which is most of a listing's cost."""

    def with_held(self, version: str, listing: Listing, records: pa.Table) -> Listing:
        """The version's listing and the files it holds by reference in earlier versions: those of records
        (file, bytes, mtime_ns, written_in) written elsewhere, as recorded (no request per file). A store
        that carries files into the version itself holds none."""
        return listing

    @abstractmethod
    def read(self, version: str, file: str) -> bytes:
        """A version's file."""

    def read_record(self, version: str, record: str) -> bytes:
        """A version's record (version.py); under its earlier name where an earlier release wrote it."""
        try:
            return self.read(version, record)
        except FileNotFoundError:
            if record not in EARLIER_NAMES:
                raise
            return self.read(version, EARLIER_NAMES[record])

    def read_many(self, version: str, files: list[str]) -> Iterator[bytes]:
        """The files' bytes, in order (S3: several requests in flight, a bounded number held)."""
        return (self.read(version, file) for file in files)

    def scan(self, version: str, files: list[str]) -> pa.Table:
        """The files read back (audit.scan_many), in order."""
        return scan_many(self.read_many(version, files))

    @abstractmethod
    def write(self, version: str, file: str, data: bytes) -> None: ...

    @abstractmethod
    def sync(self, version: str, files: list[str]) -> None:
        """The version's files are durable before it is published."""

    @abstractmethod
    def publish(self, version: str, replacing: str | None) -> str | None:
        """Make version the published one, atomically for readers, only if the published one is still replacing
        (what published() gave when this export started); else PublishRaceLost, and nothing changed. Returns
        the previous version's name (replacing, or the folder a real one was moved aside to)."""

    @abstractmethod
    def reject(self, version: str, token: str) -> str:
        """Keep a version that failed its audit (in place of the previous rejected one); its uri."""

    @abstractmethod
    def discard(self, version: str) -> None: ...

    @abstractmethod
    def remove_leftovers(self, keep: set[str], spare: bool = False) -> None:
        """Versions of killed runs and versions older than the kept ones (the last rejected one stays), but
        the files a kept version holds by reference. spare: where the store recycles a version into the next
        one (open_version), the newest complete one is spared for it."""

    def task_environment(self) -> dict[str, str]:
        """What the Spark tasks need in their environment (it reaches them sealed: core/spark/sealed.py)."""
        return {}

    def local_folder(self, version: str) -> Path | None:
        """The version's folder, when it is one on this machine."""
        return None


def open_store(location: OutputLocation | Path | str, name: str) -> Store:
    if not isinstance(location, OutputLocation):
        location = OutputLocation(path=Path(location))
    if location.path is not None:
        return LocalStore(location.path, name)
    return S3Store(location.bucket, location.prefix, name)


# --- local folder --------------------------------------------------------------------------


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _in_parallel(work: Callable[[list[str]], None], files: list[str], threads: int = 4) -> None:
    """work over files in a few threads (each file's call waits on the disk or the network, not the GIL)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, [files[i::threads] for i in range(threads)]))


def _read_files(folder: str, files: list[str]) -> Iterator[bytes]:
    """The bytes of folder's files, in order."""
    for file in files:
        with open(os.path.join(folder, file), "rb", buffering=0) as handle:
            yield handle.readall()


_SCAN_CHUNK = 50_000  # files a process reads back at a time


def _scan_files(folder: str, files: list[str]) -> pa.Table:
    return scan_many(_read_files(folder, files))


def _wait_for_writers(version: Path, bound: float = 60.0) -> list[Path]:
    """The version's attempt folders, once no task writes into them (each holds a lock on its folder while it
    writes: Spark kills the other tasks of a failed job asynchronously). bound: a hung task's folder is left
    for the next run's cleanup rather than waited for."""
    import fcntl  # POSIX only: the definitions load without it

    folders = list((version / ATTEMPTS_FOLDER).glob("*"))
    deadline = time.monotonic() + bound
    for folder in folders:
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.02)
            finally:
                os.close(fd)
    return folders


class LocalStore(Store):
    def __init__(self, output_dir: Path | str, name: str):
        self.output_dir, self.name = Path(output_dir).resolve(), name
        self.link = self.output_dir / name
        self._removing: dict[str, threading.Thread] = {}  # by version: the thread removing its stale files

    def uri(self, version: str | None = None, file: str = "") -> str:
        path = self.link if version is None else self.output_dir / version
        return str(path / file if file else path)

    def version_name(self, token: str) -> str:
        return f".{self.name}.v-{token}"

    def check_writable(self) -> None:
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            probe = self.output_dir / f".write-probe-{uuid.uuid4().hex}"
            probe.touch()
            probe.unlink()
        except OSError as error:
            raise PublishError(
                f"output folder {self.output_dir} is not writable ({error.strerror or error}): fix its permissions "
                f"or set DESAFIO_OUTPUT_DIR to a writable folder; the previous output is untouched"
            ) from None

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """POSIX flock on a lock file beside the versions; elsewhere, no lock."""
        try:
            import fcntl
        except ImportError:
            yield
            return
        with open(self.output_dir / f".{self.name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def published(self) -> str | None:
        return self.link.resolve().name if self.link.is_symlink() else None

    def open_version(self, version: str, source: str | None = None, carried: pa.Table | None = None) -> None:
        """The carried files are hard links to source's. When remove_leftovers(spare=True) spared an older
        version, that folder becomes the new version: renamed, then only the files that differ from the carried
        ones are removed or linked (those changed over the last two exports), instead of a link per carried
        file in a new folder, then removing a folder of as many files.
        The files that differ are set aside into the version's STALE_FOLDER (renamed: about 64 µs a file in a
        folder of a million here, where an unlink, which frees the file's blocks, cost 85 µs), and a thread
        removes that folder while the Spark job runs; drop_attempts waits for it. At 1M clients, 1% changed a
        day: the carry took 2.0 s instead of 3.7, the Spark job about 0.8 s more.
        A version that carries nothing (a full export) gets a twin folder too: its tasks link each file they
        write into it (_LocalAttempt), and once published it becomes the version the next export recycles
        (finish_twin), so the export after a full one removes or links only what changed, not a link per file.
        """
        folder = self.output_dir / version
        if carried is None or not len(carried):  # a full export: its tasks fill the twin
            folder.mkdir()
            (self.output_dir / twin_of(version)).mkdir()
            return
        if source is None:
            raise ValueError("carried files need the version they are carried from")
        spared = self._spared(keep={source})
        if spared is None:
            folder.mkdir()
            self._link(source, carried["file"].to_pylist(), version)
            return
        os.rename(self.output_dir / spared, folder)
        had = parse_readback(self.read_record(version, READBACK_FILE), HELD_SCHEMA)  # spared: its files as published
        for record in with_earlier(READBACK_FILE, INDEX_FILE, MANIFEST_FILE, FORMAT_FILE, SOURCE_FILE):
            (folder / record).unlink(missing_ok=True)  # _readback first: the folder is never spared again
        stale, missing = unshared_files(had, carried)

        aside = folder / STALE_FOLDER
        aside.mkdir(exist_ok=True)

        def set_aside(chunk: list[str]) -> None:
            for file in chunk:
                with contextlib.suppress(FileNotFoundError):
                    os.rename(os.path.join(folder, file), os.path.join(aside, file))

        _in_parallel(set_aside, stale)
        # A daemon: if the run is killed meanwhile, the next cleanup removes the unpublished version, .stale with it.
        self._removing[version] = threading.Thread(target=shutil.rmtree, args=(aside,), kwargs={"ignore_errors": True},
                                                   name="stale-files", daemon=True)
        self._removing[version].start()
        self._link(source, missing, version)

    def finish_twin(self, version: str) -> str | None:
        twin = self.output_dir / twin_of(version)
        if not twin.is_dir():
            return None
        os.link(self.output_dir / version / READBACK_FILE, twin / READBACK_FILE)  # complete: it may be spared
        return twin.name

    def _spared(self, keep: set[str]) -> str | None:
        """The newest version folder besides keep whose records were all written (_readback.arrow is the last;
        _readback.csv in a version of an earlier release)."""
        complete = sorted(p.name for p in self.output_dir.glob(f".{self.name}.v-*") if p.name not in keep and any(
            (p / record).is_file() for record in with_earlier(READBACK_FILE)))
        return complete[-1] if complete else None

    def task_target(self, version: str) -> str:
        return str(self.output_dir / version)

    def drop_attempts(self, version: str) -> None:
        self._settle(version)
        _wait_for_writers(self.output_dir / version)
        shutil.rmtree(self.output_dir / version / ATTEMPTS_FOLDER, ignore_errors=True)

    def files(self, version: str, stats_of: list[str] | None = None) -> Listing:
        from pyarrow import fs

        folder = str(self.output_dir / version)
        try:  # the names alone: 0.4 s for a million here
            names = pa.array([name for name in os.listdir(folder) if not name.startswith(".")], pa.string())
        except FileNotFoundError:
            return Listing.empty()
        names = in_order(names)
        if stats_of is None:  # a stat each, by Arrow in C++ from two threads: 1.5 s for a million here (selector: 2.5)
            paths = pc.binary_join_element_wise(f"{folder}/", names, "").to_pylist()
            half = len(paths) // 2
            with ThreadPoolExecutor(max_workers=2) as pool:
                infos = [info for part in pool.map(fs.LocalFileSystem().get_file_info, [paths[:half], paths[half:]])
                         for info in part]
            table = pa.table({"file": names, "bytes": pa.array([i.size for i in infos], pa.int64()),
                              "mtime_ns": pa.array([i.mtime_ns for i in infos], pa.int64())})
            return Listing(table.filter(pc.is_valid(table["bytes"])))  # folders have no size
        stats = [_stat(os.path.join(folder, file)) for file in stats_of]  # None for a file gone meanwhile
        at = pc.index_in(names, value_set=pa.array(stats_of, pa.string()))
        return Listing(pa.table({"file": names,
                                 "bytes": pa.array([s and s.st_size for s in stats], pa.int64()).take(at),
                                 "mtime_ns": pa.array([s and s.st_mtime_ns for s in stats], pa.int64()).take(at)}))

    def read(self, version: str, file: str) -> bytes:
        return (self.output_dir / version / file).read_bytes()

    def read_many(self, version: str, files: list[str]) -> Iterator[bytes]:
        return _read_files(str(self.output_dir / version), files)

    def scan(self, version: str, files: list[str]) -> pa.Table:
        """Many files are read back by one process per core (reading and parsing hold the GIL)."""
        folder, chunks = str(self.output_dir / version), [files[i : i + _SCAN_CHUNK] for i in range(0, len(files), _SCAN_CHUNK)]
        if len(chunks) < 2 or (os.cpu_count() or 1) < 2:
            return _scan_files(folder, files)
        with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
            return pa.concat_tables(pool.map(_scan_files, [folder] * len(chunks), chunks))

    def write(self, version: str, file: str, data: bytes) -> None:  # whole or not at all: a temporary, renamed
        path = self.output_dir / version / file
        temporary = path.with_name(f".{file}.{uuid.uuid4().hex[:8]}")
        temporary.write_bytes(data)
        os.replace(temporary, path)

    def _link(self, source: str, files: list[str], version: str) -> None:  # the same inodes: hard links
        source_folder, folder = str(self.output_dir / source), str(self.output_dir / version)

        def link(chunk: list[str]) -> None:
            for file in chunk:
                try:
                    os.link(os.path.join(source_folder, file), os.path.join(folder, file))
                except FileNotFoundError:
                    raise PublishError(
                        f"{file} is missing from the published version {self.output_dir / source}: a published file "
                        f"was removed by hand; run the export with clients: [{client_ids(pa.array([file]))[0]}] (or "
                        f"full_refresh: true) to write it again") from None

        _in_parallel(link, files)

    def sync(self, version: str, files: list[str]) -> None:
        for file in files:
            fsync(self.output_dir / version / file)
        fsync(self.output_dir / version)

    def publish(self, version: str, replacing: str | None) -> str | None:
        """Point the link at version with one atomic rename (under exclusive(): no other export swaps it meanwhile)."""
        link = self.link
        if (found := self.published()) != replacing:
            raise race_lost(str(link), replacing, found)
        temporary = self.output_dir / f".{self.name}.link-{uuid.uuid4().hex[:8]}"
        try:
            temporary.symlink_to(version)
            previous = replacing
            if not link.is_symlink() and link.exists():  # a real folder from elsewhere: kept as the previous version
                previous = f".{self.name}.v-replaced-{uuid.uuid4().hex[:8]}"
                link.rename(self.output_dir / previous)
            os.replace(temporary, link)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise PublishError(
                f"could not publish {link} ({error.strerror or error}): the output folder must allow symlinks "
                f"and renames; the previous output is untouched"
            ) from None
        fsync(self.output_dir)
        return previous

    def reject(self, version: str, token: str) -> str:
        for old in self.output_dir.glob(f".{self.name}.rejected-*"):
            shutil.rmtree(old, ignore_errors=True)
        rejected = self.output_dir / f".{self.name}.rejected-{token}"
        (self.output_dir / version).rename(rejected)
        shutil.rmtree(self.output_dir / twin_of(version), ignore_errors=True)  # the job, and its links, are done
        return str(rejected)

    def discard(self, version: str) -> None:
        self._settle(version)
        self._remove_version(self.output_dir / version)
        shutil.rmtree(self.output_dir / twin_of(version), ignore_errors=True)  # its tasks' last links are done

    def _settle(self, version: str) -> None:
        """Once open_version's stale files are removed (their thread done)."""
        removing = self._removing.pop(version, None)
        if removing is not None:
            removing.join()

    def _remove_version(self, folder: Path) -> None:
        """Out of the tasks' way first (a task that comes late cannot make its attempt folder there, nor link
        into the twin: it renames into the version first), then removed once no task writes in it."""
        doomed = self.output_dir / f".{self.name}.discarded-{uuid.uuid4().hex[:8]}"
        try:
            folder.rename(doomed)
        except FileNotFoundError:
            return
        _wait_for_writers(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def remove_leftovers(self, keep: set[str], spare: bool = False) -> None:
        spared = self._spared(keep) if spare else None
        keep = keep | {spared} if spared else keep
        # Versions before twins: a killed run's tasks may still write into its version and link into its twin.
        for path in sorted(self.output_dir.glob(f".{self.name}.*"), key=lambda p: p.name.endswith(TWIN_SUFFIX)):
            if path.name in keep or path.name.endswith(".lock") or path.name.startswith(f".{self.name}.rejected-"):
                continue
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.name.startswith(f".{self.name}.v-") and not path.name.endswith(TWIN_SUFFIX):
                self._remove_version(path)
            else:
                shutil.rmtree(path, ignore_errors=True)

    def local_folder(self, version: str) -> Path | None:
        return self.output_dir / version




class S3Store(Store):
    by_reference = True  # a carried file stays where it was written: no request per unchanged client
    reread_every = 10
    lease_seconds = 600.0  # a version being written is spared this long after its last renewal (every tenth of it)

    def __init__(self, bucket: str, prefix: str, name: str):
        self.bucket, self.prefix, self.name = bucket, prefix, name
        self.base = "/".join(part for part in (bucket, prefix, name) if part)  # pyarrow's path: bucket/key
        self.key_prefix = "/".join(part for part in (prefix, name) if part) + "/"  # the versions' key prefix, for boto3
        self._kept: dict[str, pa.Table] = {}  # _held of the versions a cleanup kept: they do not change

    @property
    def fs(self) -> Any:  # pyarrow's S3FileSystem
        return s3_filesystem()

    def uri(self, version: str | None = None, file: str = "") -> str:
        return "s3://" + "/".join(part for part in (self.base, version, file) if part)

    def _path(self, version: str, file: str = "") -> str:
        return "/".join(part for part in (self.base, version, file) if part)

    def version_name(self, token: str) -> str:
        return f".v-{token}"

    def check_writable(self) -> None:
        """The bucket exists, the endpoint answers and the credentials are accepted (a HEAD and a listing;
        a probe object would leave a directory marker behind once deleted)."""
        from pyarrow import fs

        try:
            bucket = self.fs.get_file_info(self.bucket)
            if bucket.type == fs.FileType.NotFound:
                raise no_bucket(self.uri(), self.bucket)
            self.fs.get_file_info(fs.FileSelector(self.base, allow_not_found=True))
        except OSError as error:
            raise s3_error(error, f"cannot use {self.uri()}") from None

    def exclusive(self) -> contextlib.AbstractContextManager:
        # No lock: Dagster's pool `source_database` runs one export at a time within a deployment; between
        # deployments, the pointer is written by a compare-and-swap (publish), and only for an audited version.
        return contextlib.nullcontext()

    def _named_in(self, file: str) -> tuple[str | None, str | None]:
        """(the version file names, its ETag); (None, None) where there is no such file."""
        try:
            data, answer = s3_get(self._path(file))
        except FileNotFoundError:
            return None, None
        name = data.decode().strip()
        return (name if name.startswith(".v-") and "/" not in name else None), answer["ETag"]

    def _name_in(self, file: str) -> str | None:
        return self._named_in(file)[0]

    def published(self) -> str | None:
        return self._name_in(POINTER_FILE)

    def open_version(self, version: str, source: str | None = None, carried: pa.Table | None = None) -> None:
        pass  # no folders, a key prefix; carried files stay in the versions that wrote them (the new index names those)

    @contextlib.contextmanager
    def leased(self, version: str) -> Iterator[None]:
        """A lease object in the version, written first and rewritten every tenth of lease_seconds by a thread,
        deleted at the end. A cleanup judges it by S3's own clock (its LastModified against the answer's Date), so
        no exporter's clock matters; a killed run's lease lapses and the next cleanup after that removes its files."""
        key = f"{self.key_prefix}{version}/{LEASE_FILE}"
        body = json.dumps({"seconds": self.lease_seconds, "holder": f"{socket.gethostname()}:{os.getpid()}"}).encode()

        def write() -> None:
            s3_client().put_object(Bucket=self.bucket, Key=key, Body=body, ContentMD5=content_md5(body))

        def renew() -> None:
            while not stop.wait(self.lease_seconds / 10):
                with contextlib.suppress(Exception):  # tried again at the next renewal; publish checks the lease
                    write()

        try:
            write()
        except Exception as error:  # botocore raises several kinds
            raise s3_error(error, f"cannot write to {self.uri(version)}") from None
        stop = threading.Event()
        renewal = threading.Thread(target=renew, name=f"lease of {version}", daemon=True)
        renewal.start()
        try:
            yield
        finally:
            stop.set()
            renewal.join()
            with contextlib.suppress(Exception):  # best effort: a lease left behind lapses
                s3_client().delete_object(Bucket=self.bucket, Key=key)

    def _lease_live(self, version: str) -> bool:
        """Whether version's lease is there and was written less than its own seconds ago, by S3's clock (the
        answer's Date; this machine's where a proxy left none that parses). In doubt, live: a lapse removes files."""
        try:
            data, answer = s3_get(self._path(version, LEASE_FILE))
        except FileNotFoundError:
            return False
        try:
            seconds = float(json.loads(data)["seconds"])
        except (ValueError, KeyError, TypeError):  # not as this project writes it: judged by the default duration
            seconds = self.lease_seconds
        return (server_time(answer) - answer["LastModified"]).total_seconds() < seconds

    def task_target(self, version: str) -> str:
        return self.uri(version)

    def drop_attempts(self, version: str) -> None:
        pass  # a failed attempt's unfinished file was never sent

    def files(self, version: str, stats_of: list[str] | None = None) -> Listing:
        from pyarrow import fs

        try:
            infos = self.fs.get_file_info(fs.FileSelector(self._path(version), allow_not_found=True))
        except OSError as error:
            raise s3_error(error, f"cannot list {self.uri(version)}") from None
        return Listing.of(infos)

    def with_held(self, version: str, listing: Listing, records: pa.Table) -> Listing:
        return listing.with_files(records.filter(pc.not_equal(records["written_in"], version)))

    def read(self, version: str, file: str) -> bytes:
        return s3_read(self._path(version, file))

    def read_many(self, version: str, files: list[str]) -> Iterator[bytes]:
        return read_s3_files(self.uri(version), files)

    def write(self, version: str, file: str, data: bytes) -> None:
        with self.fs.open_output_stream(self._path(version, file)) as out:
            out.write(data)

    def sync(self, version: str, files: list[str]) -> None:
        pass  # a PUT that returned is durable

    def publish(self, version: str, replacing: str | None) -> str | None:
        """A compare-and-swap of the pointer: a PUT conditional on the ETag of the pointer that still names
        replacing (If-Match), or on there being none (If-None-Match). Of two exports racing, one publishes."""
        from botocore.exceptions import ClientError

        if not self._lease_live(version):  # lapsed: another export's cleanup may have removed its files
            raise PublishError(f"the lease of {self.uri(version)} lapsed before its publication (no renewal for "
                               f"{self.lease_seconds:.0f} s): another export may have removed its files; nothing was "
                               f"published; the export can be run again")
        body = f"{version}\n".encode()
        for _ in range(3):  # a 409 (concurrent conditional writes), or the pointer rewritten with the same name: again
            found, etag = self._named_in(POINTER_FILE)
            if found != replacing:
                raise race_lost(self.uri(), replacing, found)
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                s3_client().put_object(Bucket=self.bucket, Key=self.key_prefix + POINTER_FILE, Body=body,
                                       ContentMD5=content_md5(body), **condition)
                return replacing
            except Exception as error:  # botocore raises several kinds
                # The write may have landed all the same (the SDK retries one whose answer was lost): the pointer says.
                now = self._pointer_after_write(version)
                if now == version:
                    return replacing
                if not isinstance(error, ClientError) or error.response.get("Error", {}).get("Code") not in (
                        "PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                    raise s3_error(error, f"could not publish {self.uri()}") from None
                if now != replacing:
                    if error.response.get("ResponseMetadata", {}).get("RetryAttempts", 0):
                        raise PublishOutcomeUnknown(  # this run's earlier attempt may have landed before the other's
                            f"{race_lost(self.uri(), replacing, now)}; this run's own write may have landed first, "
                            f"so its version is left for the next cleanup to judge") from None
                    raise race_lost(self.uri(), replacing, now) from None
        raise PublishError(f"could not publish {self.uri()}: its pointer was rewritten under every one of 3 conditional "
                           f"writes (another export at work on this prefix?); nothing was published")

    def _pointer_after_write(self, version: str) -> str | None:
        """The name the pointer holds after a write of version whose outcome is unclear; PublishOutcomeUnknown if
        it cannot be read (the version is then never discarded: it may be the published one)."""
        try:
            return self.published()
        except PublishError as unreadable:
            raise PublishOutcomeUnknown(f"could not tell whether {self.uri()} now names {version}: {unreadable}") from None

    def reject(self, version: str, token: str) -> str:
        old = self._name_in(REJECTED_FILE)
        self.write("", REJECTED_FILE, f"{version}\n".encode())
        if old and old != version:
            self.discard(old)
        return self.uri(version)

    def discard(self, version: str) -> None:
        """Every object under the version's prefix, listed and deleted a thousand at a time (pyarrow's
        delete_dir would leave an empty "folder" object behind); best effort: the next cleanup retries."""
        try:
            pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.key_prefix}{version}/")
            self._delete([item["Key"].removeprefix(self.key_prefix) for page in pages for item in page.get("Contents", [])])
        except Exception:  # botocore's kinds, or PublishError: on a failure path, never hide the first error
            pass

    def _held(self, version: str) -> pa.Table | None:
        """Each client file of version and the version holding it (file, written_in), from its _readback.arrow;
        None where there is none (a killed run's version, or a retired one already cleaned)."""
        try:
            return parse_readback(self.read_record(version, READBACK_FILE), HELD_SCHEMA)
        except FileNotFoundError:
            return None

    def _delete(self, keys: list[str]) -> None:
        """Delete keys (relative to the store's base), a thousand per request (DeleteObjects). pyarrow deletes
        one key in three requests (a HEAD, the DELETE, and a PUT of a folder marker), so boto3 does this."""
        client = s3_client()
        for start in range(0, len(keys), 1000):
            objects = [{"Key": self.key_prefix + key} for key in keys[start : start + 1000]]
            try:
                errors = client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}).get("Errors")
            except Exception as error:  # botocore raises several kinds
                raise s3_error(error, f"cannot delete retired files under {self.uri()}") from None
            if errors:
                raise s3_error(OSError(f"{errors[0].get('Key')}: {errors[0].get('Code')} {errors[0].get('Message', '')}"),
                                f"cannot delete {len(errors)} retired files under {self.uri()}")

    def remove_leftovers(self, keep: set[str], spare: bool = False) -> None:
        """Versions are key prefixes, and a version's files may live in earlier versions' prefixes. A prefix
        no kept version holds a file in is removed whole. A version that is no longer kept, but holds files
        a kept version uses, is retired: the files only it held (written or carried) are deleted, then its
        records, last, so that a cleanup cut short is done again by the next one."""
        from pyarrow import fs

        rejected = self._name_in(REJECTED_FILE)
        for version in keep - self._kept.keys():  # read once per store: a publication cleans up before and after
            if (table := self._held(version)) is not None:
                self._kept[version] = table
        held = [self._kept[version] for version in keep if version in self._kept]
        held = pa.concat_tables(held) if held else HELD_SCHEMA.empty_table()
        live = set(pc.unique(held["written_in"]).to_pylist()) | keep | {rejected}
        kept_keys = pc.binary_join_element_wise(held["written_in"], held["file"], "/")
        infos = self.fs.get_file_info(fs.FileSelector(self.base, allow_not_found=True))
        for name in sorted(i.base_name for i in infos if i.type == fs.FileType.Directory and i.base_name.startswith(".v-")):
            if name in keep or name == rejected:
                continue
            self._kept.pop(name, None)
            retired = self._held(name)
            if (retired is None and name in live) or self._lease_live(name):  # nothing of it to remove (a retired
                continue  # version's files that kept ones hold), or leased: another export is writing it
            if retired is not None:
                keys = pc.binary_join_element_wise(retired["written_in"], retired["file"], "/")
                only_here = pc.invert(pc.is_in(keys, value_set=kept_keys))
                if name not in live:  # its own prefix goes whole below
                    only_here = pc.and_(only_here, pc.not_equal(retired["written_in"], name))
                self._delete(pc.filter(keys, only_here).to_pylist())
            if name not in live:
                self.discard(name)
            elif retired is not None:
                self._delete([f"{name}/{record}" for record in with_earlier(INDEX_FILE, MANIFEST_FILE, FORMAT_FILE, SOURCE_FILE)])
                self._delete([f"{name}/{record}" for record in with_earlier(READBACK_FILE)])

    def task_environment(self) -> dict[str, str]:
        return {name: value for name in AWS_VARIABLES if (value := environment(name))}


