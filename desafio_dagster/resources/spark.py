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

    master: str | None = Field(default=None, description="Spark master URL (default: DESAFIO_SPARK_MASTER)")
    conf: dict[str, str] = Field(default_factory=dict, description="Extra spark.* settings")
    staging_dir: str | None = Field(
        default=None,
        description="Where the Parquet snapshot of the source goes (default: DESAFIO_HOME/staging); "
        "on a cluster, a path or URI every executor reads",
    )
    _session: SparkSession | None = PrivateAttr(default=None)

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

    def stale_run_ids(self) -> list[str]:
        """Run ids that have a staging folder here (local staging only)."""
        root = Path(self.staging_root)
        return [p.name for p in root.iterdir() if p.is_dir()] if "://" not in self.staging_root and root.is_dir() else []

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._session is not None:
            self._session.stop()
            self._session = None
