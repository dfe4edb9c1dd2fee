"""Spark as a Dagster resource: a thin layer over desafio_dagster.spark_session."""

from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr
from pyspark.sql import SparkSession

from desafio_dagster import settings
from desafio_dagster.extract import Staging
from desafio_dagster.spark_session import start_session


class SparkResource(dg.ConfigurableResource):
    """A SparkSession on DESAFIO_SPARK_MASTER (local[*] by default, or spark://host:port),
    started on first use and stopped when the step ends."""

    master: str = Field(default_factory=settings.spark_master, description="Spark master URL")
    conf: dict[str, str] = Field(default_factory=dict, description="Extra spark.* settings")
    staging_dir: str = Field(
        default_factory=lambda: str(settings.home() / "staging"),
        description="Where the Parquet snapshot of the source goes; on a cluster, a path or URI every executor reads",
    )
    _session: SparkSession | None = PrivateAttr(default=None)

    def session(self) -> SparkSession:
        if self._session is None:
            self._session = start_session(self.master, self.conf)
        return self._session

    def staging(self, run_id: str) -> Staging:
        """The run's own staging location."""
        return Staging(f"{self.staging_dir.rstrip('/')}/{run_id}")

    def stale_run_ids(self) -> list[str]:
        """Run ids that have a staging folder here (local staging only)."""
        root = Path(self.staging_dir)
        return [p.name for p in root.iterdir() if p.is_dir()] if "://" not in self.staging_dir and root.is_dir() else []

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._session is not None:
            self._session.stop()
            self._session = None
