"""What the Definitions carry besides the assets: column schemas and code versions on the specs,
the checks job (from Dagster's CLI, as CI runs it), the daily schedule and the automation that
refreshes movements_csv after its sources change, judged with Dagster's own evaluators."""

import datetime
import importlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import dagster as dg
import pytest
import yaml

from desafio_dagster.core.export.extract import SOURCE_SCHEMAS
from desafio_dagster.core.output.layout import HEADER
from desafio_dagster.definitions import defs
from desafio_dagster.defs.assets.source import RAW_TABLES
from desafio_dagster_tests.helpers import REPO, WORKSPACE_QUERY, dagster_cli, declared_checks, run, running_webserver

MOVEMENTS_CSV = dg.AssetKey("movements_csv")
# Dagster's automation tester selects with an argument that Dagster marks beta; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Parameter `include_sources`:dagster.BetaWarning")
POPULATE_CONFIG = {"ops": {"source_database": {"config": {"clients": 20, "movements_per_card": [0, 3], "seed": 5}}}}


def specs() -> dict[str, dg.AssetSpec]:
    return {spec.key.to_user_string(): spec for assets in defs.assets for spec in assets.specs}


def column_names(spec: dg.AssetSpec) -> list[str]:
    return [column.name for column in spec.metadata["dagster/column_schema"].columns]


def test_every_asset_declares_its_columns_and_a_code_version():
    declared = specs()
    assert set(declared) == {*RAW_TABLES, "movements_csv"}
    for key, table in RAW_TABLES.items():  # sql/schema.sql, as parsed, agrees with the extract's Arrow schemas
        assert column_names(declared[key]) == SOURCE_SCHEMAS[table].names, key
    assert column_names(declared["movements_csv"]) == HEADER.strip().split(",")
    cards = {c.name: c for c in declared["raw_cards"].metadata["dagster/column_schema"].columns}
    assert cards["num_cartao"].type == "varchar(19)" and cards["num_cartao"].constraints.unique
    assert not cards["num_cartao"].constraints.nullable and cards["id"].constraints.unique
    assert cards["id_conta"].description == "NOT NULL REFERENCES conta (id)"
    assert all(spec.code_version for spec in declared.values())


def test_a_process_that_loads_the_definitions_leaves_its_objects_to_the_system_at_exit():
    """definitions.py freezes the garbage collector's objects at exit (Python's last collection walked them all:
    0.7 s of each CLI run here); an object created after loading is collected as usual before that."""
    code = ("import atexit, gc\nimport desafio_dagster.definitions\n"
            "cycle = []; cycle.append(cycle); del cycle\nprint(gc.get_freeze_count(), gc.collect() >= 1, end=' ')\n"
            "atexit._run_exitfuncs(); print(gc.get_freeze_count() > 10_000)")
    frozen_before, collected, frozen_at_exit = subprocess.run([sys.executable, "-c", code], check=True, text=True,
                                                              capture_output=True).stdout.split()
    assert (frozen_before, collected, frozen_at_exit) == ("0", "True", "True")


def test_the_daily_export_schedule_is_stopped_and_would_start_a_valid_export_run():
    schedule = defs.resolve_schedule_def("daily_export")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert (schedule.cron_schedule, schedule.execution_timezone, schedule.job_name) == ("0 3 * * *", "UTC", "export")
    tick = schedule.evaluate_tick(dg.build_schedule_context(
        scheduled_execution_time=datetime.datetime(2026, 1, 2, 3, 0, tzinfo=datetime.UTC)))
    [request] = tick.run_requests
    assert request.job_name in (None, "export")  # None: the schedule's own job
    assert dg.validate_run_config(defs.resolve_job_def("export"), request.run_config)


def test_movements_csv_is_refreshed_after_a_populate_once_the_source_checks_pass(database_url, env_home, source_db):
    sensor = defs.resolve_sensor_def("automation_conditions")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    instance = dg.DagsterInstance.ephemeral()
    cursor = None

    def requested() -> set[dg.AssetKey]:
        nonlocal cursor
        result = dg.evaluate_automation_conditions(defs, instance, cursor=cursor)
        cursor = result.cursor
        return {key for key in [*RAW_TABLES, MOVEMENTS_CSV] if result.get_num_requested(dg.AssetKey.from_coercible(key))}

    assert requested() == set(), "nothing to export from: the sources were never materialized"
    assert run("populate", POPULATE_CONFIG, instance).success
    assert requested() == {MOVEMENTS_CSV}, "the sources changed and movements_csv was never made from them"
    assert run("export", instance=instance).success  # the run the daemon starts
    assert requested() == set(), "movements_csv is newer than its sources"

    assert run("etl", POPULATE_CONFIG, instance).success
    assert requested() == set(), "a run that updated the sources and movements_csv together needs no refresh"

    # A populate whose data then fails a blocking check: no export until the checks pass again.
    assert run("populate", POPULATE_CONFIG, instance).success
    with source_db.connect() as conn:
        conn.execute("UPDATE movimento SET des_transacao = ' ' WHERE id = (SELECT min(id) FROM movimento)")
    assert not run("checks", instance=instance).success
    assert requested() == set(), "a blocking check of a source failed"
    assert requested() == set()
    with source_db.connect() as conn:
        conn.execute("UPDATE movimento SET des_transacao = 'Compra' WHERE id = (SELECT min(id) FROM movimento)")
    assert run("checks", instance=instance).success
    assert requested() == {MOVEMENTS_CSV}
    assert requested() == set(), "requested once, not on every tick"


@pytest.mark.command
def test_the_checks_job_from_the_cli_after_etl_passes_and_fails_on_a_tampered_output(database_url, env_home, tmp_path):
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")  # what make run and make ui use
    (home / "run_config.yaml").write_text(yaml.safe_dump(POPULATE_CONFIG))
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    code, out = dagster_cli("etl", "-c", "run_config.yaml", env=env, cwd=home)
    assert code == 0, out[-4000:]

    code, out = dagster_cli("checks", env=env, cwd=home)
    assert code == 0, out[-4000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [latest] = instance.get_runs(limit=1)
        assert (latest.job_name, latest.status) == ("checks", dg.DagsterRunStatus.SUCCESS)
        planned = instance.get_execution_plan_snapshot(latest.execution_plan_snapshot_id)
        assert {step.key for step in planned.steps} == {"source_database_checks", "movements_csv_checks"}

    client_file = next(p for p in (env_home / "data" / "movements_csv").iterdir() if not p.name.startswith("_"))
    client_file.unlink()
    code, out = dagster_cli("checks", env=env, cwd=home)
    assert code != 0
    assert "one_file_per_client" in out


def _dg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Dagster's `dg` CLI in the repository root, where pyproject.toml's [tool.dg] declares the code location."""
    dg_cli = Path(sys.executable).parent / "dg"
    return subprocess.run([str(dg_cli), *args], cwd=REPO, env=env | {"VIRTUAL_ENV": sys.prefix},
                          capture_output=True, text=True, timeout=300)


@pytest.mark.command
def test_dg_lists_checks_and_launches_the_definitions_from_the_repo_root(database_url, env_home, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    listed = _dg("list", "defs", "--json", env=env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]} == {*RAW_TABLES, "movements_csv"}
    checked = _dg("check", "defs", env=env)
    assert checked.returncode == 0 and "All definitions loaded successfully" in checked.stdout + checked.stderr

    launched = _dg("launch", "--job", "etl", "--config-json", json.dumps(POPULATE_CONFIG), env=env)
    assert launched.returncode == 0, (launched.stdout + launched.stderr)[-4000:]
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        [latest] = instance.get_runs(limit=1)
        assert (latest.job_name, latest.status) == ("etl", dg.DagsterRunStatus.SUCCESS)
    assert len(list((env_home / "data" / "movements_csv").glob("0*.csv"))) == 20


def test_workspace_yaml_and_tool_dg_declare_the_same_code_location():
    """The card's workspace.yaml (dagster dev/webserver/daemon -w) and pyproject.toml's [tool.dg] (dg) are two
    declarations of one code location: the same module, under the same location name."""
    [entry] = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    assert entry == {"python_module": {"module_name": declared["code_location_target_module"],
                                       "location_name": declared["code_location_name"]}}
    assert importlib.import_module(declared["code_location_target_module"]).defs is defs


@pytest.mark.command
def test_dagster_webserver_with_the_workspace_file_serves_the_five_assets_and_their_checks(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    webserver = [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml"]
    with running_webserver(webserver, env=env, log=tmp_path / "webserver.log") as server:
        [entry] = server.graphql(WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
        nodes = server.graphql("""{ assetNodes { assetKey { path } assetChecksOrError {
            ... on AssetChecks { checks { name } } } } }""")["assetNodes"]
    served = {(node["assetKey"]["path"][-1], check["name"])
              for node in nodes for check in node["assetChecksOrError"]["checks"]}
    assert entry["name"] == "desafio_dagster"
    assert {node["assetKey"]["path"][-1] for node in nodes} == {*RAW_TABLES, "movements_csv"}
    assert served == declared_checks()
