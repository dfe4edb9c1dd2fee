"""Spark as a Dagster resource: dagster-pyspark's lazy session, started by
desafio_dagster.core.spark_session (Java discovery, clear start-up errors) and stopped after use."""

from typing import Any

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import SparkSession

from desafio_dagster.core import settings
from desafio_dagster.core.spark_session import DEFAULT_CONF, prepare_environment, start_session
from desafio_dagster.core.staging import StagingArea


class SparkResource(LazyPySparkResource):
    """A SparkSession on `master` (local[*], or spark://host:port), started on first use and stopped
    when the resource is torn down (after the run, under the in-process executor the jobs use)."""

    spark_config: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_CONF), description="spark.* settings of the session"
    )
    master: str = Field(default="", description=settings.SPARK_MASTER.describe())
    home: str = Field(default="", description=settings.HOME.describe() + ". The source is staged under HOME/staging")
    staging_dir: str = Field(
        default="",
        description="Where the Parquet snapshot goes instead (on a cluster, a path or URI every executor reads)",
    )

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False  # this subclass is the project's own

    def _init_session(self) -> None:
        if self._spark_session is None:
            self._spark_session = start_session(self.master_url, self.spark_config)

    def prepare_environment(self) -> None:
        """Set Java and Python for Spark now, before a session starts in another thread."""
        prepare_environment()

    @property
    def master_url(self) -> str:
        return settings.SPARK_MASTER.value(self.master)

    def session(self) -> SparkSession:
        return self.spark_session

    @property
    def staging_area(self) -> StagingArea:
        return StagingArea(self.staging_dir or str(settings.HOME.path(self.home) / "staging"))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._spark_session is not None:
            self._spark_session.stop()
            self._spark_session = None
