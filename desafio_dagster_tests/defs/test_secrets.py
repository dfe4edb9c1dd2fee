"""The source's password reaches the Spark tasks, which log in with it, and appears nowhere else: not in
the Spark Connect server's environment or log, not in Spark's event log (what the Spark UI and its history server show: the environment, every query plan),
not in Dagster's event log, compute logs or run config, not in the run's output.

The server is an embedded Postgres whose pg_hba.conf requires a password (scram-sha-256) from every
user but its superuser: a task without the password could not read a row."""

import json
import os
import secrets
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from desafio_dagster.core.source import loading
from desafio_dagster.core.source.fakedata import generate
from desafio_dagster.core.source.source_db import SourceDatabase
from desafio_dagster.core.spark.connect_server import stop_server
from desafio_dagster_tests.helpers import SMALL, dagster_cli, own_project_server, project_server_traces, published_files


@pytest.fixture
def password_only_url(private_server):
    """A database owned by a role that must log in with its password; (url, password)."""
    password = secrets.token_hex(16)
    superuser = private_server[1]
    with psycopg.connect(superuser, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE exporter LOGIN PASSWORD '{password}'")
        admin.execute("CREATE DATABASE secret_source OWNER exporter")
        hba = Path(admin.execute("SHOW hba_file").fetchone()[0])
        hba.write_text("local all postgres trust\nlocal all all scram-sha-256\n")
        admin.execute("SELECT pg_reload_conf()")
    return make_conninfo(superuser, user="exporter", password=password, dbname="secret_source"), password


@pytest.mark.command
def test_the_password_reaches_the_tasks_and_appears_nowhere_else(password_only_url, env_home, tmp_path):
    url, password = password_only_url
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(make_conninfo(url, password="wrong")).close()
    source = SourceDatabase(url)
    loading.replace(source, generate(SMALL))

    events, conf, dagster_home = tmp_path / "spark-events", tmp_path / "spark-conf", tmp_path / "dagster"
    for folder in (events, conf, dagster_home):
        folder.mkdir()
    # Spark's own event log: the environment and every SQL execution's plan, as the UI shows them.
    (conf / "spark-defaults.conf").write_text(f"spark.eventLog.enabled true\nspark.eventLog.dir file://{events}\n"
                                              "spark.eventLog.compress false\n")
    # The default engine: the project's own Connect server, started by this export, its event log on.
    home = env_home / "home"
    env = own_project_server({**os.environ, "DESAFIO_POSTGRES_URL": url, "DAGSTER_HOME": str(dagster_home)}, home, conf)
    env.pop("PGPASSWORD", None)
    try:
        code, out = dagster_cli("export", env=env)
        assert code == 0, out[-4000:]
        server = project_server_traces(home)
    finally:
        stop_server(home)
    with source.connect() as conn:
        clients = conn.execute("SELECT count(*) FROM associado").fetchone()[0]
    assert len(published_files(env_home / "data" / "movements_csv")) == clients == SMALL.clients

    spark_log = "\n".join(p.read_text() for p in events.rglob("*") if p.is_file())
    assert '"spark.executorEnv.DESAFIO_TASK_SECRET":"*********(redacted)"' in spark_log.replace(" ", ""), \
        "the key that opens the tasks' sealed password is a redacted executor environment variable"
    assert "read_join_and_write_client_files" in spark_log and "SparkListenerSQLExecutionStart" in spark_log, "the plans"
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [run] = instance.get_runs()
        dagster_events = "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(run.run_id))
        run_config = json.dumps(run.run_config)
    files = "\n".join(p.read_text(errors="replace") for p in dagster_home.rglob("*") if p.is_file() and p.suffix != ".db")
    places = {"Spark event log": spark_log, "Dagster event log": dagster_events, "run config": run_config,
              "Dagster's compute logs and storage files": files, "the run's output": out,
              "the Spark server's environment and log": server}
    for place, text in places.items():
        assert password not in text, f"the password appears in {place}"
