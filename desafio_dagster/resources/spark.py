"""Spark as a Dagster resource: dagster-pyspark's lazy session, started by
desafio_dagster.spark_session (Java discovery, clear start-up errors) and stopped after use."""

import time
import uuid
from typing import Any

import dagster as dg
import pyarrow.fs as pa_fs
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import SparkSession

from desafio_dagster.extract import Staging
from desafio_dagster.spark_session import DEFAULT_CONF, prepare_environment, start_session


def _is_run_id(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


class SparkResource(LazyPySparkResource):
    """A SparkSession on `master` (local[*], or spark://host:port), started on first use and stopped
    when the resource is torn down (after the run, under the in-process executor the jobs use)."""

    spark_config: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_CONF), description="spark.* settings of the session"
    )
    master: str = Field(description="Spark master URL: local[*], or spark://host:7077 for a standalone cluster")
    home: str = Field(description="The Parquet snapshot of the source is staged under HOME/staging")
    staging_dir: str = Field(
        default="",
        description="Where the Parquet snapshot goes instead (on a cluster, a path or URI every executor reads)",
    )

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False  # this subclass is the project's own

    def _init_session(self) -> None:
        if self._spark_session is None:
            self._spark_session = start_session(self.master, self.spark_config)

    def prepare_environment(self) -> None:
        """Set Java and Python for Spark now, before a session starts in another thread."""
        prepare_environment()

    def session(self) -> SparkSession:
        return self.spark_session

    @property
    def staging_root(self) -> str:
        return self.staging_dir or f"{self.home}/staging"

    def staging(self, run_id: str) -> Staging:
        """The run's own staging location."""
        return Staging(f"{self.staging_root.rstrip('/')}/{run_id}")

    def staged_runs(self) -> list[tuple[str, float]]:
        """(run id, age in seconds; 0 where the store keeps no time) of the staging folders named by a run id."""
        fs, root = Staging(self.staging_root).filesystem()
        now = time.time()
        return [
            (info.base_name, now - info.mtime.timestamp() if info.mtime else 0.0)
            for info in fs.get_file_info(pa_fs.FileSelector(root, allow_not_found=True))
            if info.type == pa_fs.FileType.Directory and _is_run_id(info.base_name)
        ]

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._spark_session is not None:
            self._spark_session.stop()
            self._spark_session = None
