"""The source database as a Dagster resource: a thin layer over desafio_dagster.core.source.source_db."""

import dagster as dg
from pydantic import Field

from desafio_dagster.core import settings
from desafio_dagster.core.source.embedded import embedded_url
from desafio_dagster.core.source.source_db import DEFAULT_LOCK_TIMEOUT, DEFAULT_STALL_TIMEOUT, SourceDatabase


class PostgresResource(dg.ConfigurableResource):
    """Connects with the libpq URL; when it is empty, starts (or reuses) an embedded Postgres under
    HOME/pgdata that outlives the run's processes. Empty fields take the environment's settings
    (desafio_dagster.core.settings): a secret in the URL then never sits in run config, the UI or metadata."""

    url: str = Field(default="", description=settings.POSTGRES_URL.describe())
    home: str = Field(default="", description=settings.HOME.describe())
    schema_name: str = Field(default="", description=settings.SCHEMA.describe())
    lock_timeout_seconds: float = Field(
        default=DEFAULT_LOCK_TIMEOUT,
        description="How long a populate or export waits for another one holding the tables before it fails",
    )
    stall_timeout_seconds: float = Field(
        default=DEFAULT_STALL_TIMEOUT, gt=0,
        description="How long an export's Spark task waits for the next bytes from Postgres before it takes the "
                    "network for stalled and the export starts again from a fresh snapshot",
    )
    max_export_connections: int = Field(
        default=0, ge=0,
        description="Most connections the export's Spark tasks open at once (one per running task); 0: one per "
                    "executor core",
    )

    def database(self) -> SourceDatabase:
        url = settings.POSTGRES_URL.value(self.url) or embedded_url(settings.HOME.path(self.home))
        return SourceDatabase(url, settings.SCHEMA.value(self.schema_name), self.lock_timeout_seconds,
                              self.stall_timeout_seconds)
