"""Where the versions of the per-client files live: a local folder, or an S3 bucket and prefix. Pure: no Dagster.

publish.py holds the one publication protocol (write, scan, audit, publish, clean up) and
incremental.py the one plan; a Store holds only what differs between the two backends:

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

import base64
import contextlib
import ctypes
import datetime
import functools
import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from desafio_dagster.core.audit import MANIFEST_FILE, SCAN_SCHEMA, scan_many
from desafio_dagster.core.errors import DesafioError, TransientError, first_line
from desafio_dagster.core.layout import FORMAT_FILE, INDEX_FILE, READBACK_FILE, SOURCE_FILE, client_ids, read_table
from desafio_dagster.core.settings import OutputLocation, environment

# The standard variables an S3 store reads (never shown with their values): credentials, region, endpoint.
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
POINTER_FILE = "_published"  # on S3: the name of the published version, written last
REJECTED_FILE = "_rejected"  # on S3: the name of the last version that failed its audit, kept for inspection
LEASE_FILE = "_lease"  # on S3, in a version being written: other exports' cleanups spare the version while it is live


class PublishError(DesafioError):
    """The output could not be published; the previous output is untouched."""


class PublishRaceLost(PublishError):
    """Another export published the output after this one started from what it published before."""


class PublishOutcomeUnknown(PublishError):
    """The pointer's write may have landed, and whether it did cannot be read back: the version is kept (never
    discarded, readers may be using it); the next export's cleanup judges it by the pointer."""


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
        """Remove what failed task attempts left in the version, once the Spark job is done."""

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
        """What the Spark tasks need in their environment (it reaches them sealed: core/sealed.py)."""
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


def fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk (where the process that wrote it runs)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _syncfs():
    """libc's syncfs(2), or None where the OS has none (only Linux does)."""
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        return None


def sync_filesystem(folder: Path, files: list[str]) -> None:
    """Make folder's files and entries durable: one syncfs(2) of its filesystem where the OS has it
    (Linux), which costs about as much as one fsync, not one per file; else an fsync per file and folder."""
    if (syncfs := _syncfs()) is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    with ThreadPoolExecutor(max_workers=8) as pool:  # fsync waits on the disk, not the GIL
        list(pool.map(fsync, [*(folder / f for f in files), folder]))


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


_TWIN = "-twin"


def twin_of(version: str) -> str:
    """The folder beside a version that its twin is made in (LocalStore.open_version): a version name, newer."""
    return f"{version}{_TWIN}"


class LocalStore(Store):
    def __init__(self, output_dir: Path | str, name: str):
        self.output_dir, self.name = Path(output_dir).resolve(), name
        self.link = self.output_dir / name

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
    def exclusive(self):
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
        A version that carries nothing (a full export) gets a twin folder too: its tasks link each file they
        write into it (_LocalAttempt), and once published it becomes the version the next export recycles
        (finish_twin), so the export after a full one removes or links only what changed, not a link per file.
        """
        folder = self.output_dir / version
        spared = self._spared(keep={source}) if source and carried is not None and len(carried) else None
        if spared is None:
            folder.mkdir()
            if carried is not None and len(carried):
                self._link(source, carried["file"].to_pylist(), version)
            else:
                (self.output_dir / twin_of(version)).mkdir()
            return
        os.rename(self.output_dir / spared, folder)
        had = read_table((folder / READBACK_FILE).read_bytes(), _HELD_SCHEMA)  # spared: its files as it published them
        for record in (READBACK_FILE, INDEX_FILE, MANIFEST_FILE, FORMAT_FILE, SOURCE_FILE):  # the last: never spared again
            (folder / record).unlink(missing_ok=True)
        had_keys, wanted_keys = (pc.binary_join_element_wise(t["written_in"], t["file"], "/") for t in (had, carried))
        stale = pc.filter(had["file"], pc.invert(pc.is_in(had_keys, value_set=wanted_keys))).to_pylist()
        missing = pc.filter(carried["file"], pc.invert(pc.is_in(wanted_keys, value_set=had_keys))).to_pylist()

        def unlink(chunk: list[str]) -> None:
            for file in chunk:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, file))

        _in_parallel(unlink, stale)
        self._link(source, missing, version)

    def finish_twin(self, version: str) -> str | None:
        twin = self.output_dir / twin_of(version)
        if not twin.is_dir():
            return None
        os.link(self.output_dir / version / READBACK_FILE, twin / READBACK_FILE)  # complete: it may be spared
        return twin.name

    def _spared(self, keep: set[str]) -> str | None:
        """The newest version folder besides keep whose records were all written (_readback.csv is the last)."""
        complete = sorted(p.name for p in self.output_dir.glob(f".{self.name}.v-*")
                          if p.name not in keep and (p / READBACK_FILE).is_file())
        return complete[-1] if complete else None

    def task_target(self, version: str) -> str:
        return str(self.output_dir / version)

    def drop_attempts(self, version: str) -> None:
        _wait_for_writers(self.output_dir / version)
        shutil.rmtree(self.output_dir / version / _ATTEMPTS, ignore_errors=True)

    def files(self, version: str, stats_of: list[str] | None = None) -> Listing:
        from pyarrow import fs

        folder = str(self.output_dir / version)
        try:  # the names alone: 0.4 s for a million here
            names = pa.array([name for name in os.listdir(folder) if not name.startswith(".")], pa.string())
        except FileNotFoundError:
            return Listing.empty()
        names = names.take(pc.sort_indices(names))
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
        self._remove_version(self.output_dir / version)
        shutil.rmtree(self.output_dir / twin_of(version), ignore_errors=True)  # its tasks' last links are done

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
        keep = keep | ({self._spared(keep)} if spare else set())
        # Versions before twins: a killed run's tasks may still write into its version and link into its twin.
        for path in sorted(self.output_dir.glob(f".{self.name}.*"), key=lambda p: p.name.endswith(_TWIN)):
            if path.name in keep or path.name.endswith(".lock") or path.name.startswith(f".{self.name}.rejected-"):
                continue
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.name.startswith(f".{self.name}.v-") and not path.name.endswith(_TWIN):
                self._remove_version(path)
            else:
                shutil.rmtree(path, ignore_errors=True)

    def local_folder(self, version: str) -> Path | None:
        return self.output_dir / version


# --- S3 ------------------------------------------------------------------------------------

_CLIENTS: dict = {}  # per process: one pyarrow filesystem and one boto3 client per endpoint, region and key id
_CLIENTS_LOCK = threading.Lock()


def _per_process(kind: str, make: Callable[[str, str], object]):
    """make(endpoint URL, or "" for AWS's, region), once per process for the standard AWS variables: the
    endpoint from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (https:// unless it names a scheme), the region
    from AWS_REGION or AWS_DEFAULT_REGION. Credentials are read by the SDKs from the environment."""
    endpoint = (environment("AWS_ENDPOINT_URL_S3") or environment("AWS_ENDPOINT_URL")).strip()
    endpoint = endpoint if not endpoint or "://" in endpoint else f"https://{endpoint}"
    region = (environment("AWS_REGION") or environment("AWS_DEFAULT_REGION") or "us-east-1").strip()
    key = (kind, endpoint, region, os.environ.get("AWS_ACCESS_KEY_ID", ""))
    with _CLIENTS_LOCK:  # a client is thread-safe once made; making one is not (tasks read from threads)
        if key not in _CLIENTS:
            _CLIENTS[key] = make(endpoint, region)
        return _CLIENTS[key]


def s3_filesystem():
    """pyarrow's S3FileSystem (listings, records), which does not read the endpoint variables by itself."""
    from pyarrow import fs

    def make(endpoint: str, region: str):
        # allow_delayed_open: a small file is one PutObject on close, not a three-request multipart upload.
        options = {"region": region, "connect_timeout": 10, "request_timeout": 60, "allow_delayed_open": True,
                   "check_directory_existence_before_creation": False}
        if endpoint:
            parts = urlsplit(endpoint)
            options |= {"endpoint_override": parts.netloc + parts.path.rstrip("/"), "scheme": parts.scheme}
        return fs.S3FileSystem(**options)

    return _per_process("pyarrow", make)


def s3_client():
    """boto3's S3 client: for what pyarrow's filesystem cannot do in one request (a GET without a HEAD, a
    PUT with its MD5, a batch of deletes)."""
    import boto3.session
    from botocore.config import Config

    def make(endpoint: str, region: str):
        # The endpoint is ours (blank variables unset). Checksums only where S3 requires them: the PUTs
        # carry their Content-MD5, and a streamed CRC32 trailer is refused by some S3-compatible servers.
        # Retries: S3's 503 SlowDown, 500s, resets and timeouts, with backoff, 5 attempts in all (standard mode's
        # max_attempts counts the retries; a GET cut off mid-body is read again by _s3_get, as the SDK does not).
        config = Config(ignore_configured_endpoint_urls=True, connect_timeout=10, read_timeout=60,
                        max_pool_connections=4 * _IN_FLIGHT, request_checksum_calculation="when_required",
                        response_checksum_validation="when_required", retries={"mode": "standard", "max_attempts": 4})
        return boto3.session.Session().client("s3", region_name=region, endpoint_url=endpoint or None, config=config)

    return _per_process("boto3", make)


def _no_bucket(uri: str, bucket: str) -> PublishError:
    return PublishError(f"cannot use {uri}: the bucket {bucket} does not exist at the endpoint "
                        f"({', '.join(AWS_VARIABLES[-2:])}, else AWS's): create it, or fix DESAFIO_OUTPUT_DIR")


# S3's answers that a later attempt may not get: throttling and the service's own failures (botocore's error codes,
# and pyarrow's names for them).
_UNAVAILABLE = re.compile(r"\b(SlowDown|InternalError|ServiceUnavailable|RequestTimeout|SLOW_DOWN|INTERNAL_FAILURE|"
                          r"SERVICE_UNAVAILABLE|REQUEST_TIMEOUT)\b|HTTP status 5\d\d")


class StoreUnavailable(PublishError, TransientError):
    """S3 kept answering with a server error or throttling after the SDK's retries: the step is tried again."""


def _s3_error(error: Exception, what: str) -> PublishError:
    names = ", ".join(AWS_VARIABLES)
    cause = first_line(error).rstrip(".")
    from botocore.exceptions import ConnectionError as NetworkError
    from botocore.exceptions import HTTPClientError

    status = (getattr(error, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    network = isinstance(error, (NetworkError, HTTPClientError)) or "NETWORK_CONNECTION" in str(error)
    if (status >= 500 and status != 501) or network or _UNAVAILABLE.search(str(error)):  # 501: not supported there
        return StoreUnavailable(f"{what}: {cause}. The store kept failing through every retry with backoff: the "
                                f"step is tried again later; the previous output is untouched")
    return PublishError(f"{what}: {cause}. "
                        f"Check the bucket exists and the credentials and endpoint in the environment ({names}) "
                        f"allow it; the previous output is untouched")


# What a version's _readback.csv says of where each of its client files is: the version that wrote it.
_HELD_SCHEMA = pa.schema([("file", pa.string()), ("written_in", pa.string())])


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
    def fs(self):
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
                raise _no_bucket(self.uri(), self.bucket)
            self.fs.get_file_info(fs.FileSelector(self.base, allow_not_found=True))
        except OSError as error:
            raise _s3_error(error, f"cannot use {self.uri()}") from None

    def exclusive(self):
        # No lock: Dagster's pool `source_database` runs one export at a time within a deployment; between
        # deployments, the pointer is written by a compare-and-swap (publish), and only for an audited version.
        return contextlib.nullcontext()

    def _named_in(self, file: str) -> tuple[str | None, str | None]:
        """(the version file names, its ETag); (None, None) where there is no such file."""
        try:
            data, answer = _s3_get(self._path(file))
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
            s3_client().put_object(Bucket=self.bucket, Key=key, Body=body, ContentMD5=_content_md5(body))

        def renew() -> None:
            while not stop.wait(self.lease_seconds / 10):
                with contextlib.suppress(Exception):  # tried again at the next renewal; publish checks the lease
                    write()

        try:
            write()
        except Exception as error:  # botocore raises several kinds
            raise _s3_error(error, f"cannot write to {self.uri(version)}") from None
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
            data, answer = _s3_get(self._path(version, LEASE_FILE))
        except FileNotFoundError:
            return False
        try:
            seconds = float(json.loads(data)["seconds"])
        except (ValueError, KeyError, TypeError):  # not as this project writes it: judged by the default duration
            seconds = self.lease_seconds
        return (_server_time(answer) - answer["LastModified"]).total_seconds() < seconds

    def task_target(self, version: str) -> str:
        return self.uri(version)

    def drop_attempts(self, version: str) -> None:
        pass  # a failed attempt's unfinished file was never sent

    def files(self, version: str, stats_of: list[str] | None = None) -> Listing:
        from pyarrow import fs

        try:
            infos = self.fs.get_file_info(fs.FileSelector(self._path(version), allow_not_found=True))
        except OSError as error:
            raise _s3_error(error, f"cannot list {self.uri(version)}") from None
        return Listing.of(infos)

    def with_held(self, version: str, listing: Listing, records: pa.Table) -> Listing:
        return listing.with_files(records.filter(pc.not_equal(records["written_in"], version)))

    def read(self, version: str, file: str) -> bytes:
        return _s3_read(self._path(version, file))

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
                                       ContentMD5=_content_md5(body), **condition)
                return replacing
            except Exception as error:  # botocore raises several kinds
                # The write may have landed all the same (the SDK retries one whose answer was lost): the pointer says.
                now = self._pointer_after_write(version)
                if now == version:
                    return replacing
                conflict = isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in (
                    "PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey")
                if not conflict:
                    raise _s3_error(error, f"could not publish {self.uri()}") from None
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
        """Each client file of version and the version holding it (file, written_in), from its _readback.csv;
        None where there is none (a killed run's version, or a retired one already cleaned)."""
        try:
            return read_table(_s3_read(self._path(version, READBACK_FILE)), _HELD_SCHEMA)
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
                raise _s3_error(error, f"cannot delete retired files under {self.uri()}") from None
            if errors:
                raise _s3_error(OSError(f"{errors[0].get('Key')}: {errors[0].get('Code')} {errors[0].get('Message', '')}"),
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
        held = pa.concat_tables(held) if held else _HELD_SCHEMA.empty_table()
        live = set(pc.unique(held["written_in"]).to_pylist()) | keep | {rejected}
        kept_keys = pc.binary_join_element_wise(held["written_in"], held["file"], "/")
        infos = self.fs.get_file_info(fs.FileSelector(self.base, allow_not_found=True))
        for name in sorted(i.base_name for i in infos if i.type == fs.FileType.Directory and i.base_name.startswith(".v-")):
            if name in keep or name == rejected or self._lease_live(name):  # leased: another export is writing it
                continue
            self._kept.pop(name, None)
            retired = self._held(name)
            if retired is not None:
                keys = pc.binary_join_element_wise(retired["written_in"], retired["file"], "/")
                only_here = pc.invert(pc.is_in(keys, value_set=kept_keys))
                if name not in live:  # its own prefix goes whole below
                    only_here = pc.and_(only_here, pc.not_equal(retired["written_in"], name))
                self._delete(pc.filter(keys, only_here).to_pylist())
            if name not in live:
                self.discard(name)
            elif retired is not None:
                self._delete([f"{name}/{record}" for record in (INDEX_FILE, MANIFEST_FILE, FORMAT_FILE, SOURCE_FILE)])
                self._delete([f"{name}/{READBACK_FILE}"])

    def task_environment(self) -> dict[str, str]:
        return {name: value for name in AWS_VARIABLES if (value := environment(name))}


def _server_time(answer: dict) -> datetime.datetime:
    """The time an S3 answer was sent, by the server's clock (its Date header; a proxy may have added a second one,
    joined after the first: an HTTP date is 29 characters); this machine's clock where there is none that parses."""
    try:
        sent = parsedate_to_datetime(answer["ResponseMetadata"]["HTTPHeaders"]["date"][:29])
    except (KeyError, TypeError, ValueError):
        return datetime.datetime.now(datetime.UTC)
    return sent if sent.tzinfo else sent.replace(tzinfo=datetime.UTC)  # "-0000": UTC, says RFC 5322


def _content_md5(data: bytes) -> str:
    """A PUT's Content-MD5: S3 refuses the object if the bytes it received differ from those sent."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _s3_read(path: str) -> bytes:
    """An object's bytes (path: bucket/key) in one GET (pyarrow's streams send a HEAD first)."""
    return _s3_get(path)[0]


def _s3_get(path: str, attempts: int = 3) -> tuple[bytes, dict]:
    """An object's bytes and the GET's answer (ETag, LastModified, the server's Date...). A body cut off by the
    network is read again: the SDK retries a request that failed, not a body it handed over."""
    from botocore.exceptions import ClientError, IncompleteReadError, ResponseStreamingError

    bucket, _, key = path.partition("/")
    client = s3_client()
    for _ in range(attempts):
        try:
            answer = client.get_object(Bucket=bucket, Key=key)
            return answer["Body"].read(), answer
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code == "NoSuchBucket":
                raise _no_bucket(f"s3://{path}", bucket) from None
            if code in ("NoSuchKey", "404"):  # "404": the error's body was lost, its status was not
                raise FileNotFoundError(f"s3://{path}") from None
            raise _s3_error(error, f"cannot read s3://{path}") from None
        except (ResponseStreamingError, IncompleteReadError) as error:
            cut = error
        except Exception as error:  # botocore raises several kinds
            raise _s3_error(error, f"cannot read s3://{path}") from None
    raise _s3_error(cut, f"cannot read s3://{path} ({attempts} attempts)")


_IN_FLIGHT = 8  # S3 requests a process keeps in flight: each waits on the network, not the GIL
_SCAN_BYTES = 16 << 20  # bytes an S3 attempt holds before it scans them


def _prefetch(read: Callable[[str], bytes], files: list[str], ahead: int = 64) -> Iterator[bytes]:
    """read(file) of each file, in order, with _IN_FLIGHT reads at a time and at most `ahead` files held."""
    with ThreadPoolExecutor(max_workers=_IN_FLIGHT) as pool:
        for start in range(0, len(files), ahead):
            yield from pool.map(read, files[start : start + ahead])


# --- what a Spark task attempt writes to -------------------------------------------------------


# The attempts' folders, in one folder of the version: found without listing the version (a million entries).
_ATTEMPTS = ".attempts"


def _wait_for_writers(version: Path, bound: float = 60.0) -> list[Path]:
    """The version's attempt folders, once no task writes into them (each holds a lock on its folder while it
    writes: Spark kills the other tasks of a failed job asynchronously). bound: a hung task's folder is left
    for the next run's cleanup rather than waited for."""
    import fcntl  # POSIX only: the definitions load without it

    folders = list((version / _ATTEMPTS).glob("*"))
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


class _Attempt:
    """What a Spark task attempt writes to. Each file is held in memory until complete, then stored whole
    (_store): a failed attempt's unfinished file is dropped, never stored. The scan for the audit is taken from
    the bytes as they are stored, not read back."""

    def __init__(self):
        self.unscanned: list[bytes] = []
        self.unscanned_bytes = 0
        self.scanned: list[pa.Table] = []
        self.stored: list[tuple[int, int | None]] = []  # each file's size and mtime once stored (stats())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def open(self, file: str):
        return io.BytesIO()

    def close(self, file: str, handle) -> None:
        data = handle.getvalue()
        handle.close()
        self.stored.append((len(data), self._store(file, data)))
        self.unscanned.append(data)
        self.unscanned_bytes += len(data)
        if self.unscanned_bytes >= _SCAN_BYTES:
            self._scan()

    def _store(self, file: str, data: bytes) -> int | None:
        """Store the file whole; its mtime in ns where the store keeps one that a rename keeps (else None)."""
        raise NotImplementedError

    def _scan(self) -> None:
        if self.unscanned:
            self.scanned.append(scan_many(self.unscanned))
            self.unscanned, self.unscanned_bytes = [], 0

    def finish(self, files: list[str]) -> None:
        """Every file stored and durable, before the driver publishes them."""

    def scans(self, files: list[str]) -> pa.Table:
        """The files as stored, in order (audit.scan_many)."""
        self._scan()
        return pa.concat_tables(self.scanned) if self.scanned else SCAN_SCHEMA.empty_table()

    def stats(self) -> tuple[pa.Array, pa.Array]:
        """The stored files' sizes and mtimes (nulls where the store has none), in order: locally what a listing
        would stat (a rename keeps both), so the driver stats none of them (8 s a million files here)."""
        sizes, mtimes = zip(*self.stored) if self.stored else ((), ())
        return pa.array(sizes, pa.int64()), pa.array(mtimes, pa.int64())


class _LocalAttempt(_Attempt):  # the Spark task's side of LocalStore
    """Writes into a folder of the attempt's own (in the version's .attempts), then renames each complete file
    into the version: a file there is always complete, and a retried or speculative attempt (which writes the
    same bytes, from the same snapshot) replaces it whole. What a failed attempt left in its folder is
    removed by the driver (LocalStore.drop_attempts). Creating the files in that new, small folder and
    renaming them in costs less than creating them in the version's large one (measured here: about 200
    against 420 µs a file among 200,000, unnamed O_TMPFILE files 330-470 µs): ext4 places a new folder's
    inodes in another block group."""

    def __init__(self, version: str, partition: int, attempt: int):
        super().__init__()
        self.version = version
        attempts = os.path.join(version, _ATTEMPTS)
        with contextlib.suppress(FileExistsError):  # not makedirs: a task late after a failed job must not make a
            os.mkdir(attempts)  # discarded version again
        self.folder = os.path.join(attempts, f"{partition:05d}-{attempt}")
        os.mkdir(self.folder)
        # Locked while the task writes: the driver removes the attempt only once it may (_wait_for_writers).
        import fcntl

        self.lock = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        twin = twin_of(version)
        self.twin = twin if os.path.isdir(twin) else None  # LocalStore.open_version made one: a full export

    def __exit__(self, *exc) -> None:
        os.close(self.lock)

    def _store(self, file: str, data: bytes) -> int:
        with open(os.path.join(self.folder, file), "wb", buffering=0) as out:
            view = memoryview(data)
            while view:
                view = view[out.write(view) :]
            return os.fstat(out.fileno()).st_mtime_ns

    def finish(self, files: list[str]) -> None:
        for file in files:
            os.rename(os.path.join(self.folder, file), os.path.join(self.version, file))
            if self.twin:  # the same inode
                try:
                    os.link(os.path.join(self.version, file), os.path.join(self.twin, file))
                except FileExistsError:  # a retried attempt's file replaces the first one's there too, whole
                    temporary = os.path.join(self.folder, f".{file}.twin")
                    os.link(os.path.join(self.version, file), temporary)
                    os.replace(temporary, os.path.join(self.twin, file))
        os.rmdir(self.folder)
        sync_filesystem(Path(self.version), files)  # durable before the driver publishes them


class _S3Attempt(_Attempt):  # the Spark task's side of S3Store
    """Straight into the version's prefix: each file is one PUT when its handle closes, _IN_FLIGHT at a time,
    with its Content-MD5, so S3 refuses bytes that differ from those sent (pyarrow's read back would cost a
    HEAD and a GET). A PUT that comes after its version was discarded leaves an object the next cleanup removes."""

    def __init__(self, uri: str):
        super().__init__()
        self.bucket, _, self.key = uri.removeprefix("s3://").partition("/")
        self.client = s3_client()
        self.pool, self.pending = ThreadPoolExecutor(max_workers=_IN_FLIGHT), []

    def _store(self, file: str, data: bytes) -> None:
        if len(self.pending) >= 4 * _IN_FLIGHT:  # bounded: each holds its file's bytes until sent
            self.pending.pop(0).result()
        self.pending.append(self.pool.submit(self._put, file, data))

    def _put(self, file: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=f"{self.key}/{file}", Body=data, ContentMD5=_content_md5(data))
        except Exception as error:  # botocore raises several kinds
            raise _s3_error(error, f"cannot write s3://{self.bucket}/{self.key}/{file}") from None

    def finish(self, files: list[str]) -> None:
        try:
            for put in self.pending:
                put.result()
        finally:
            self.pending.clear()
            self.pool.shutdown()


def open_attempt(target: str, partition: int, attempt: int):
    """In a Spark task: where its files go (target: Store.task_target)."""
    return _S3Attempt(target) if target.startswith("s3://") else _LocalAttempt(target, partition, attempt)


def read_s3_files(uri: str, files: list[str]) -> Iterator[bytes]:
    """In a Spark task: the bytes of files under a version's uri, in order, several requests in flight."""
    path = uri.removeprefix("s3://")
    return _prefetch(lambda file: _s3_read(f"{path}/{file}"), files)
