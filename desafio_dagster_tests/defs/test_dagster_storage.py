"""Dagster on Postgres: the deployment's docker/dagster.yaml (storage section as shipped, the
connection read from DAGSTER_POSTGRES_*), the etl job run from Dagster's CLI, and the run, its
events and its asset check executions read back from the storage database with SQL."""

import json
import os
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml

from desafio_dagster_tests.helpers import REPO, dagster_cli, declared_checks

DEPLOYED_INSTANCE = REPO / "docker" / "dagster.yaml"
RUN_CONFIG = {"ops": {"source_database": {"config": {"clients": 20, "movements_per_card": [0, 3], "seed": 5}}}}


@pytest.fixture
def dagster_home(tmp_path) -> Path:
    """DAGSTER_HOME whose dagster.yaml is docker/dagster.yaml without the run launcher and the
    run coordinator (they need the compose stack's daemon and gRPC server); storage as shipped."""
    config = yaml.safe_load(DEPLOYED_INSTANCE.read_text())
    assert "postgres" in config["storage"], "docker/dagster.yaml keeps Dagster's storage in Postgres"
    for section in ("run_launcher", "run_coordinator"):
        config.pop(section, None)
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


@pytest.mark.command
def test_etl_run_and_its_checks_are_stored_in_postgres(database_url, env_home, dagster_storage_url, dagster_home, tmp_path):
    run_config = tmp_path / "run_config.yaml"
    run_config.write_text(yaml.safe_dump(RUN_CONFIG))
    code, out = dagster_cli("etl", "-c", str(run_config), env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
                            cwd=tmp_path)
    assert code == 0, out[-4000:]

    with psycopg.connect(dagster_storage_url) as conn:
        runs = conn.execute("SELECT run_id, pipeline_name, status FROM runs").fetchall()
        assert [(name, status) for _, name, status in runs] == [("etl", "SUCCESS")]
        run_id = runs[0][0]
        events = dict(conn.execute(
            "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = %s GROUP BY 1", (run_id,)
        ).fetchall())
        executions = conn.execute(
            "SELECT asset_key, check_name, execution_status FROM asset_check_executions WHERE run_id = %s", (run_id,)
        ).fetchall()
        materialized = {json.loads(key)[0] for (key,) in conn.execute(
            "SELECT asset_key FROM asset_keys WHERE last_materialization_timestamp IS NOT NULL"
        ).fetchall()}

    # Stored under Dagster's own names (a run's success is still "PIPELINE_SUCCESS" in the table).
    assert events[dg.DagsterEventType.RUN_SUCCESS.value] == 1
    assert events[dg.DagsterEventType.ASSET_CHECK_EVALUATION.value] == len(declared_checks())
    assert events[dg.DagsterEventType.ASSET_MATERIALIZATION.value] == 5
    assert materialized == {"raw_clients", "raw_accounts", "raw_cards", "raw_movements", "movements_csv"}
    assert len(executions) == len(declared_checks())
    assert {(json.loads(key)[0], name) for key, name, _ in executions} == declared_checks()
    assert {status for _, _, status in executions} == {"SUCCEEDED"}
    # Nothing went to the default SQLite storage under DAGSTER_HOME.
    assert not list(dagster_home.rglob("*.db"))

    # Dagster itself (what the webserver and daemon use) reads the same run back from Postgres.
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        run = instance.get_run_by_id(run_id)
        assert run.job_name == "etl" and run.status == dg.DagsterRunStatus.SUCCESS
