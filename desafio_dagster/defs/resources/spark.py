"""Spark as a Dagster resource: dagster-pyspark's lazy session, here a Spark Connect session on a server
that outlives the run (desafio_dagster.core.spark.spark_session.connect), released after use."""

from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field, PrivateAttr

from desafio_dagster.core import settings
from desafio_dagster.core.spark.spark_session import DEFAULT_CONF, Connected, connect

if TYPE_CHECKING:
    from pyspark.sql.connect.session import SparkSession


class SparkResource(LazyPySparkResource):
    """A Spark Connect session, opened on first use and released when the resource is torn down (after the
    run, under the in-process executor the jobs use). master local[*] or spark://host:port: the project's
    own Connect server for that master, started once and reused by later runs; sc://host:port: yours."""

    spark_config: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_CONF),
        description="spark.* settings: spark.sql.* for the run's session; the others start the project's server "
                    "with them (a change starts a new server)")
    master: str = Field(default="", description=settings.SPARK_MASTER.describe())
    _connected: Connected | None = PrivateAttr(default=None)

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False  # this subclass is the project's own

    def _init_session(self) -> None:
        self.connected()

    @property
    def master_url(self) -> str:
        return settings.SPARK_MASTER.value(self.master)

    def connected(self) -> Connected:
        """The run's session and how to seal the tasks' credentials for it, opened on first use (again, for a
        retried step, if the project's server was lost)."""
        if self._connected is not None and not self._connected.alive():
            self._connected.close()
            self._spark_session = self._connected = None
        if self._connected is None:
            self._connected = connect(self.master_url, {key: str(value) for key, value in self.spark_config.items()})
            self._spark_session = self._connected.session
        return self._connected

    def session(self) -> "SparkSession":
        return self.connected().session

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._connected is not None:
            self._connected.close()  # the session only: the server stays for the next run
            self._spark_session = self._connected = None
