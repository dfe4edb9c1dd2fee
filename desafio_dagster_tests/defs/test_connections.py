"""Each running Spark task holds one connection to the source: an export that would need more than
the server has free fails at once, clearly, before any task connects, and is not retried."""


import psycopg
from psycopg.conninfo import make_conninfo

from desafio_dagster.core.export import extract
from desafio_dagster.core.source import loading
from desafio_dagster.core.source.embedded import embedded_pg_ctl
from desafio_dagster.core.source.fakedata import generate
from desafio_dagster.core.source.source_db import SourceDatabase
from desafio_dagster_tests.helpers import SMALL, failed_run_message, run


def test_too_few_free_connections_fail_clearly_before_any_task_connects(private_server, env_home, monkeypatch):
    home, superuser = private_server
    with psycopg.connect(superuser, autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET max_connections = 5")  # 3 of them reserved for superusers
        admin.execute("CREATE DATABASE small_server")
    embedded_pg_ctl(home, "-w", "-m", "fast", "restart")  # takes the new limit
    url = make_conninfo(superuser, dbname="small_server")
    loading.replace(SourceDatabase(url), generate(SMALL))
    monkeypatch.setenv("DESAFIO_POSTGRES_URL", url)
    monkeypatch.setattr(extract, "ROWS_PER_PARTITION", 20)  # this small source in more ranges than task slots

    result = run("export")
    message = failed_run_message(result)
    # The run's Spark server has 4 task slots; 2 connections are free.
    assert "would open up to 4 connections at once" in message and "max_connections=5" in message, message
    assert "max_export_connections" in message
    restarts = [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
    assert restarts == [], "a setting to change, not a fault to retry"
