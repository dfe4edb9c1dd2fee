"""The staging area: where each run's Parquet snapshot of the source waits for Spark. Pure: no Dagster.

Lifecycle, all here: a run stages its snapshot in <root>/<run id> (a retried attempt starts it
afresh), removes it once its output is published, and removes what runs that ended without
publishing (failed, killed) left behind.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow.fs as pa_fs

UNKNOWN_RUN_GRACE_SECONDS = 24 * 3600  # staging of a run this instance does not know is kept a day


@dataclass(frozen=True)
class Staging:
    """One run's snapshot: a local or shared path, or a filesystem URI (every Spark executor
    must be able to read it)."""

    location: str

    def filesystem(self) -> tuple[pa_fs.FileSystem, str]:
        if "://" in self.location:
            return pa_fs.FileSystem.from_uri(self.location)
        return pa_fs.LocalFileSystem(), str(pa_fs.LocalFileSystem().normalize_path(os.path.abspath(self.location)))

    def uri(self, table: str) -> str:
        """The table's folder as Spark reads it."""
        if "://" in self.location:
            return f"{self.location.rstrip('/')}/{table}"
        return f"file://{os.path.abspath(self.location)}/{table}"

    def remove(self) -> None:
        fs, path = self.filesystem()
        if fs.get_file_info(path).type != pa_fs.FileType.NotFound:
            fs.delete_dir(path)


def _is_run_id(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


@dataclass(frozen=True)
class StagingArea:
    """The folder (or URI) holding every run's staging, one folder per run id."""

    root: str

    def for_run(self, run_id: str) -> Staging:
        return Staging(f"{self.root.rstrip('/')}/{run_id}")

    def runs(self) -> list[tuple[str, float]]:
        """(run id, age in seconds; 0 where the store keeps no time) of the folders named by a run id."""
        fs, root = Staging(self.root).filesystem()
        now = time.time()
        return [
            (info.base_name, now - info.mtime.timestamp() if info.mtime else 0.0)
            for info in fs.get_file_info(pa_fs.FileSelector(root, allow_not_found=True))
            if info.type == pa_fs.FileType.Directory and _is_run_id(info.base_name)
        ]

    def remove_stale(self, current_run_id: str, run_finished: Callable[[str], bool | None]) -> list[str]:
        """Remove the staging of runs that ended without cleaning up: run_finished(run id) is True,
        or None (a run this instance does not know) and the folder is a day old. Returns their ids."""
        stale = [
            run_id for run_id, age in self.runs()
            if run_id != current_run_id
            and (run_finished(run_id) or (run_finished(run_id) is None and age > UNKNOWN_RUN_GRACE_SECONDS))
        ]
        for run_id in stale:
            self.for_run(run_id).remove()
        return stale
