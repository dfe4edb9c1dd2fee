"""Spark as a Dagster resource: dagster-pyspark's lazy session, started by
desafio_dagster.core.spark_session (Java discovery, clear start-up errors) and stopped after use."""

from typing import Any

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import SparkSession

from desafio_dagster.core import settings
from desafio_dagster.core.spark_session import DEFAULT_CONF, SHORT_JOB_ROWS, start_session


class SparkResource(LazyPySparkResource):
    """A SparkSession on `master` (local[*], or spark://host:port), started on first use and stopped
    when the resource is torn down (after the run, under the in-process executor the jobs use)."""

    spark_config: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_CONF), description="spark.* settings of the session"
    )
    master: str = Field(default="", description=settings.SPARK_MASTER.describe())

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False  # this subclass is the project's own

    def _init_session(self) -> None:
        self.session()

    @property
    def master_url(self) -> str:
        return settings.SPARK_MASTER.value(self.master)

    def session(self, executor_env: dict[str, str] | None = None, rows: int = 0) -> SparkSession:
        """The run's session, started on first use with executor_env in the executors' (and their Python
        workers') environment: spark.executorEnv.*, whose values Spark redacts in its UI and event log.
        rows: about how many rows the run's job handles (it tunes the local JVM's compiler)."""
        if self._spark_session is None:
            env = {f"spark.executorEnv.{name}": value for name, value in (executor_env or {}).items()}
            self._spark_session = start_session(self.master_url, {**self.spark_config, **env},
                                                short=rows < SHORT_JOB_ROWS)
        return self._spark_session

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._spark_session is not None:
            self._spark_session.stop()
            self._spark_session = None
