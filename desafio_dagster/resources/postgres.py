"""The source database as a Dagster resource: a thin layer over desafio_dagster.source_db."""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from desafio_dagster import settings
from desafio_dagster.source_db import DEFAULT_LOCK_TIMEOUT, SourceDatabase, embedded_url


class PostgresResource(dg.ConfigurableResource):
    """Connects with DESAFIO_POSTGRES_URL; when it is unset, starts (or reuses) an
    embedded Postgres under DESAFIO_HOME/pgdata that outlives the run's processes.

    The URL is read from the environment when the resource is used, so the secret
    never sits in run config, the UI or metadata.
    """

    url_env_var: str = Field(default="DESAFIO_POSTGRES_URL", description="Environment variable holding the libpq URL")
    home: str | None = Field(default=None, description="Embedded Postgres lives in HOME/pgdata (default: DESAFIO_HOME)")
    schema_name: str | None = Field(default=None, description="Schema of the four tables (default: DESAFIO_SCHEMA)")
    lock_timeout_seconds: float = Field(
        default=DEFAULT_LOCK_TIMEOUT,
        description="How long a populate or export waits for another one holding the tables before it fails",
    )

    def database(self) -> SourceDatabase:
        url = os.environ.get(self.url_env_var) or embedded_url(Path(self.home) if self.home else settings.home())
        return SourceDatabase(url, self.schema_name or settings.schema(), self.lock_timeout_seconds)
