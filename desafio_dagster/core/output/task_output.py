"""What a Spark task attempt writes its client files to (open_attempt), locally or on S3: the tasks' side of
store.py, which runs in Spark's Python workers, not in the driver. Pure: no Dagster."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from desafio_dagster.core.export.audit import scan_many
from desafio_dagster.core.output.s3 import IN_FLIGHT, content_md5, s3_client, s3_error
from desafio_dagster.core.output.version import SCAN_SCHEMA

_SCAN_BYTES = 16 << 20  # bytes an S3 attempt holds before it scans them


def fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk (where the process that wrote it runs)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
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


TWIN_SUFFIX = "-twin"


def twin_of(version: str) -> str:
    """The folder beside a version that its twin is made in (LocalStore.open_version): a version name, newer."""
    return f"{version}{TWIN_SUFFIX}"


# The attempts' folders, in one folder of the version: found without listing the version (a million entries).
ATTEMPTS_FOLDER = ".attempts"


class _Attempt:
    """What a Spark task attempt writes to. Each file is held in memory until complete, then stored whole
    (_store): a failed attempt's unfinished file is dropped, never stored. The scan for the audit is taken from
    the bytes as they are stored, not read back."""

    def __init__(self) -> None:
        self.unscanned: list[bytes] = []
        self.unscanned_bytes = 0
        self.scanned: list[pa.Table] = []
        self.stored: list[tuple[int, int | None]] = []  # each file's size and mtime once stored (stats())

    def __enter__(self) -> _Attempt:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def open(self, file: str) -> io.BytesIO:
        return io.BytesIO()

    def close(self, file: str, handle: io.BytesIO) -> None:
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
        attempts = os.path.join(version, ATTEMPTS_FOLDER)
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

    def __exit__(self, *exc: object) -> None:
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
    """Straight into the version's prefix: each file is one PUT when its handle closes, IN_FLIGHT at a time,
    with its Content-MD5, so S3 refuses bytes that differ from those sent (pyarrow's read back would cost a
    HEAD and a GET). A PUT that comes after its version was discarded leaves an object the next cleanup removes."""

    def __init__(self, uri: str):
        super().__init__()
        self.bucket, _, self.key = uri.removeprefix("s3://").partition("/")
        self.client = s3_client()
        self.pool, self.pending = ThreadPoolExecutor(max_workers=IN_FLIGHT), list[Future]()

    def _store(self, file: str, data: bytes) -> None:
        if len(self.pending) >= 4 * IN_FLIGHT:  # bounded: each holds its file's bytes until sent
            self.pending.pop(0).result()
        self.pending.append(self.pool.submit(self._put, file, data))

    def _put(self, file: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=f"{self.key}/{file}", Body=data, ContentMD5=content_md5(data))
        except Exception as error:  # botocore raises several kinds
            raise s3_error(error, f"cannot write s3://{self.bucket}/{self.key}/{file}") from None

    def finish(self, files: list[str]) -> None:
        try:
            for put in self.pending:
                put.result()
        finally:
            self.pending.clear()
            self.pool.shutdown()


def open_attempt(target: str, partition: int, attempt: int) -> _Attempt:
    """In a Spark task: where its files go (target: Store.task_target)."""
    return _S3Attempt(target) if target.startswith("s3://") else _LocalAttempt(target, partition, attempt)
