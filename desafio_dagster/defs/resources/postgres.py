"""The source database as a Dagster resource: a thin layer over desafio_dagster.core.source_db."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from desafio_dagster.core.source_db import DEFAULT_LOCK_TIMEOUT, SourceDatabase, embedded_url


class PostgresResource(dg.ConfigurableResource):
    """Connects with the libpq URL; when it is empty, starts (or reuses) an embedded Postgres under
    HOME/pgdata that outlives the run's processes. Set the URL with dg.EnvVar: the secret then
    never sits in run config, the UI or metadata."""

    url: str = Field(description="libpq URL of the source database; empty: the embedded Postgres")
    home: str = Field(description="The embedded Postgres lives in HOME/pgdata")
    schema_name: str = Field(description="Schema of the four tables")
    lock_timeout_seconds: float = Field(
        default=DEFAULT_LOCK_TIMEOUT,
        description="How long a populate or export waits for another one holding the tables before it fails",
    )

    def database(self) -> SourceDatabase:
        return SourceDatabase(self.url or embedded_url(Path(self.home)), self.schema_name, self.lock_timeout_seconds)
