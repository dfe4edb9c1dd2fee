"""Spark as a Dagster resource: a thin layer over desafio_dagster.spark_session."""

import time
import uuid

import dagster as dg
import pyarrow.fs as pa_fs
from pydantic import Field, PrivateAttr
from pyspark.sql import SparkSession

from desafio_dagster import settings
from desafio_dagster.extract import Staging
from desafio_dagster.spark_session import prepare_environment, start_session


def _is_run_id(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


class SparkResource(dg.ConfigurableResource):
    """A SparkSession on DESAFIO_SPARK_MASTER (local[*] by default, or spark://host:port),
    started on first use and stopped when the resource is torn down (after the step, or
    after the run under the in-process executor the jobs use)."""

    master: str | None = Field(default=None, description="Spark master URL (default: DESAFIO_SPARK_MASTER)")
    conf: dict[str, str] = Field(default_factory=dict, description="Extra spark.* settings")
    staging_dir: str | None = Field(
        default=None,
        description="Where the Parquet snapshot of the source goes (default: DESAFIO_HOME/staging); "
        "on a cluster, a path or URI every executor reads",
    )
    _session: SparkSession | None = PrivateAttr(default=None)

    def prepare_environment(self) -> None:
        """Set Java and Python for Spark now, before a session starts in another thread."""
        prepare_environment()

    def session(self) -> SparkSession:
        if self._session is None:
            self._session = start_session(self.master_url, self.conf)
        return self._session

    @property
    def master_url(self) -> str:
        return self.master or settings.spark_master()

    @property
    def staging_root(self) -> str:
        return self.staging_dir or str(settings.home() / "staging")

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
        if self._session is not None:
            self._session.stop()
            self._session = None
