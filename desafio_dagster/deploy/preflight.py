"""The docker-compose stack's preflight (its one-shot `init` service): both Postgres logins work
before any long-running service starts. No Dagster here; `init` runs `dagster instance migrate`
after it. Messages name the login and the server, never a password.

    python -m desafio_dagster.deploy.preflight     # exit 0, or 1 with one line per failed login
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from desafio_dagster.core import settings
from desafio_dagster.core.errors import DesafioError
from desafio_dagster.core.source.pg import one
from desafio_dagster.core.source.source_db import describe, redact, validate_identifier

STORAGE_VARIABLES = ("HOST", "PORT", "USER", "PASSWORD", "DB")


def _connect(what: str, variable: str, secret: str | None, conninfo: str = "", **params: Any) -> psycopg.Connection:
    """A connection, or an error that names `what` failed and why (libpq's reason), with no secret."""
    try:
        return psycopg.connect(conninfo, connect_timeout=10, autocommit=True,
                               application_name="desafio_dagster preflight", **params)
    except psycopg.Error as error:
        reason = " ".join(str(error).split()) or type(error).__name__  # libpq's lines, on one line
        if secret:
            reason = reason.replace(secret, "***")
        if "password authentication failed" in reason:
            reason += f"; check {variable} (a Postgres volume keeps the passwords it was initialised with)"
        raise DesafioError(f"{what}: cannot log in: {reason}") from None


def check_dagster_storage(env: Mapping[str, str]) -> str:
    """Log in to Dagster's storage database as docker/dagster.yaml does (DAGSTER_POSTGRES_*)."""
    values = {name: env.get(f"DAGSTER_POSTGRES_{name}", "") for name in STORAGE_VARIABLES}
    missing = [f"DAGSTER_POSTGRES_{name}" for name, value in values.items() if not value]
    what = f"Dagster storage ({values['USER']}@{values['HOST']}:{values['PORT']}/{values['DB']})"
    if missing:
        raise DesafioError(f"{what}: {', '.join(missing)} not set")
    with _connect(what, "DAGSTER_POSTGRES_PASSWORD", values["PASSWORD"], host=values["HOST"], port=values["PORT"],
                  user=values["USER"], password=values["PASSWORD"], dbname=values["DB"]):
        return f"{what}: login ok"


def check_source(env: Mapping[str, str]) -> str:
    """Log in to the source database (DESAFIO_POSTGRES_URL, its password in PGPASSWORD), and see that
    DESAFIO_SCHEMA exists or that the login may create it (populate creates what is missing)."""
    url, schema = settings.POSTGRES_URL.value(environ=env), validate_identifier(settings.SCHEMA.value(environ=env))
    if not url:
        raise DesafioError("source database: DESAFIO_POSTGRES_URL not set (the image has no embedded Postgres)")
    try:
        user = conninfo_to_dict(url).get("user") or env.get("PGUSER", "")
    except psycopg.ProgrammingError:
        raise DesafioError(f"source database: DESAFIO_POSTGRES_URL is not a libpq URL: {redact(url)}") from None
    what = f"source database ({user}@{describe(url)})"
    with _connect(what, "DESAFIO_POSTGRES_PASSWORD (PGPASSWORD)", env.get("PGPASSWORD"), url) as conn:
        exists, may_create = one(conn,
            "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s), "
            "has_database_privilege(current_database(), 'CREATE')", (schema,))
    if not (exists or may_create):
        raise DesafioError(f"{what}: schema {schema} does not exist and {user} may not create it")
    return f"{what}: login ok, schema {schema} {'present' if exists else 'missing (populate creates it)'}"


def main(env: Mapping[str, str] = os.environ) -> int:
    failed = False
    for check in (check_dagster_storage, check_source):
        try:
            print(f"preflight: {check(env)}", flush=True)
        except DesafioError as error:
            print(f"preflight failed: {error}", file=sys.stderr, flush=True)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
