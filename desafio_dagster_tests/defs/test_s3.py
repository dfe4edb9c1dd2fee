"""movements_csv published to S3 (a real S3 server, moto's, on loopback): the same contract as on a local
disk. The tasks write straight to the bucket; a version is published by a pointer object written last;
readers resolve the pointer once. Read back here with boto3, not with the project's store."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from pyspark.sql import functions as F

from desafio_dagster.core.export.audit import AuditError
from desafio_dagster.core.export.publish import publish_per_client
from desafio_dagster.core.output.store import open_store
from desafio_dagster.core.output.version import INDEX_FILE, READBACK_FILE, parse_index, parse_readback
from desafio_dagster.core.settings import OutputLocation
from desafio_dagster.core.spark.connect_server import stop_server
from desafio_dagster_tests.helpers import (
    CONTRACT,
    FULL_REFRESH,
    SPEC,
    expected_files,
    export,
    export_checks,
    exported_view,
    failed_run_message,
    own_project_server,
    project_server_traces,
    run,
    start_dagster_cli,
)
from desafio_dagster_tests.readers import S3Reader


@pytest.fixture
def on_s3(s3, env_home, monkeypatch):
    """DESAFIO_OUTPUT_DIR=s3://bucket/exports, from a working directory that must stay empty."""
    monkeypatch.setenv("DESAFIO_OUTPUT_DIR", s3.output_dir)
    cwd = env_home / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return s3


def _nothing_local(env_home: Path) -> None:
    assert list((env_home / "cwd").iterdir()) == [], "no local copy of the output"
    assert not (env_home / "data").exists()


@pytest.fixture
def published_s3(on_s3, source, env_home):
    """A first export to S3: (its version, its files' bytes)."""
    _, metadata = export()
    version = on_s3.published()
    assert metadata["version"] == f"{on_s3.output_dir}/movements_csv/{version}"
    return version, on_s3.snapshot()


@pytest.mark.parametrize("mask", [True, False])
def test_s3_files_equal_the_sql_oracle_and_the_checks_pass(on_s3, source, env_home, mask):
    result, metadata = export({"ops": {"movements_csv": {"config": {"mask_card_numbers": mask}}}})
    expected = expected_files(source, mask)
    assert on_s3.published_files() == expected
    version = on_s3.published()
    assert version.startswith(".v-")
    index = {f["file"]: f for f in parse_index(on_s3.get(f"exports/movements_csv/{version}/{INDEX_FILE}")).to_pylist()}
    assert sorted(index) == sorted(expected) and index["00000001_joao-jota-conceicao-filho.csv"]["nome_associado"] == 'João "Jota"'
    assert {row["version"] for row in on_s3.index(version)} == {version}, "a full export holds every file itself"
    assert metadata["path"] == f"{on_s3.output_dir}/movements_csv"
    assert (metadata["export_mode"], metadata["clients_rewritten"], metadata["dagster/row_count"]) == (
        "full", SPEC.clients, sum(map(len, expected.values())))
    evaluations = result.get_asset_check_evaluations()
    assert {(e.asset_key.to_user_string(), e.check_name) for e in evaluations} == export_checks()
    assert all(e.passed for e in evaluations)
    # Only the pointer and the one version: no staging, no probe left behind.
    assert {key.split("/")[2] for key in on_s3.keys("exports/movements_csv/")} == {"_published", version}
    _nothing_local(env_home)


def test_the_io_manager_reads_the_published_s3_version(published_s3, source, env_home):
    from desafio_dagster.defs.io_managers.per_client_csv import PerClientCsvIOManager
    from desafio_dagster.defs.resources.spark import SparkResource

    manager = PerClientCsvIOManager(spark=SparkResource())
    context = dg.build_input_context(asset_key=dg.AssetKey("movements_csv"),
                                     upstream_output=dg.build_output_context(asset_key=dg.AssetKey("movements_csv")))
    frame = manager.load_input(context)
    assert frame.columns == ["client_id", *CONTRACT]
    rows = frame.orderBy("client_id", "data_movimento").collect()
    expected = expected_files(source, True)
    assert len(rows) == sum(map(len, expected.values()))
    first = next(r for r in rows if r.client_id == 1)
    assert [first[c] for c in CONTRACT] == expected["00000001_joao-jota-conceicao-filho.csv"][0]
    manager.spark.teardown_after_execution(None)


def test_a_failed_audit_on_s3_publishes_nothing_and_keeps_the_rejected_version(published_s3, on_s3, source, connected):
    version, files = published_s3
    store = open_store(OutputLocation(bucket=on_s3.bucket, prefix="exports"), "movements_csv")
    sealed = connected.seal(store.task_environment())  # the AWS variables, as the export sends them
    with exported_view(source, connected.session) as (snapshot_view, exported):
        view = snapshot_view.frame()
        victim = view.filter("movement_id IS NOT NULL").agg(F.min("client_id")).first()[0]
        broken = view.unionByName(view.filter(F.col("client_id") == victim))  # its rows twice
        with pytest.raises(AuditError) as raised:
            publish_per_client(broken, store, exported.clients, sealed=sealed)
        first = on_s3.get("exports/movements_csv/_rejected").decode().strip()
        assert "client_totals_match_snapshot" in str(raised.value) and "Nothing was published" in str(raised.value)
        assert f"exports/movements_csv/{first}" in str(raised.value)
        assert on_s3.published() == version and on_s3.snapshot() == files
        assert on_s3.version_files(first), "the rejected version is kept for inspection"
        with pytest.raises(AuditError):  # only the last rejected version is kept
            publish_per_client(broken, store, exported.clients, sealed=sealed)
    second = on_s3.get("exports/movements_csv/_rejected").decode().strip()
    assert second != first and not on_s3.version_files(first) and on_s3.version_files(second)
    assert on_s3.published() == version and on_s3.snapshot() == files


def _readme_reader(on_s3) -> dict:
    """Run the README's "Reading the output from S3" code against the test's bucket: its `files`."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = readme.split("**Reading the output from S3**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace('"127.0.0.1:9000"', repr(on_s3.endpoint.removeprefix("http://")))
    code = code.replace('"bucket/prefix/movements_csv"', repr(f"{on_s3.bucket}/exports/movements_csv"))
    scope: dict = {}
    exec(code, scope)
    return scope["files"]


def test_the_checks_read_every_tenth_written_file_and_any_changed_since_it_was_sent(on_s3, source):
    from desafio_dagster.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    result, _ = export(instance=instance)
    reads = {c.metadata["files_read"].value for c in result.get_asset_check_evaluations() if "files_read" in c.metadata}
    assert reads == {-(-SPEC.clients // 10)}, "every tenth file the run wrote, by name"
    version = on_s3.published()
    victim = sorted(on_s3.located_files(version))[1]  # not one of the tenth files
    key = f"exports/movements_csv/{version}/{victim}"
    on_s3.client().put_object(Bucket=on_s3.bucket, Key=key, Body=on_s3.get(key) + b"not,a,row\n")
    checks_only = dg.define_asset_job("checks_only", selection=dg.AssetSelection.checks_for_assets("movements_csv"))
    job = dg.Definitions.merge(defs, dg.Definitions(jobs=[checks_only])).resolve_job_def("checks_only")
    checked = job.execute_in_process(instance=instance, raise_on_error=False)
    evaluations = {e.check_name: e for e in checked.get_asset_check_evaluations()}
    assert not evaluations["client_totals_match_snapshot"].passed
    assert victim[:8] in str(evaluations["client_totals_match_snapshot"].metadata["detail"].value)
    assert evaluations["client_totals_match_snapshot"].metadata["files_read"].value == reads.pop() + 1


def test_a_version_whose_carried_files_were_copies_is_followed_by_a_full_export(published_s3, on_s3):
    first, _ = published_s3
    key = f"exports/movements_csv/{first}/_format.json"
    written = json.loads(on_s3.get(key))
    assert written.pop("carried_files") == "held where written"
    # As the export wrote it before files were held by reference: its records' written_in named the version a
    # copy came from, not where the copy is. Reading that as a reference would carry files from a removed version.
    on_s3.client().put_object(Bucket=on_s3.bucket, Key=key, Body=json.dumps(written).encode())
    _, metadata = export()
    assert (metadata["export_mode"], metadata["export_reason"]) == (
        "full", "carried_files changed since the published version")
    assert {row["version"] for row in on_s3.index(on_s3.published())} == {on_s3.published()}


def _prefixes(on_s3) -> set[str]:
    return {key.split("/")[2] for key in on_s3.keys("exports/movements_csv/.v-")}


def test_incremental_export_on_s3_carries_unchanged_files_by_reference_and_equals_a_full_export(
        published_s3, on_s3, source):
    first, _ = published_s3
    stored = {o["Key"]: o["LastModified"] for o in on_s3.client().list_objects_v2(
        Bucket=on_s3.bucket, Prefix=f"exports/movements_csv/{first}/")["Contents"]}
    with source.connect() as conn:
        conn.execute("INSERT INTO movimento SELECT max(id) + 1, -9.99, 'nova', '2025-12-31 09:00', "
                     "(SELECT min(k.id) FROM cartao k JOIN conta c ON c.id = k.id_conta WHERE c.id_associado = 3) "
                     "FROM movimento")
        conn.execute("UPDATE associado SET nome = 'Renomeada' WHERE id = 12")
    result, metadata = export()
    assert (metadata["export_mode"], metadata["clients_rewritten"], metadata["clients_carried"]) == (
        "incremental", 2, SPEC.clients - 2)
    second = on_s3.published()
    assert second != first
    # The new version's prefix holds the two files it wrote and its records; its index names the first
    # version for every other file, which stays where it was written: not copied, not touched.
    written = {name for name in on_s3.version_files(second) if not name.startswith("_")}
    assert {name[:8] for name in written} == {"00000003", "00000012"}
    index = on_s3.index(second)
    assert {(row["file"] in written, row["version"]) for row in index} == {(True, second), (False, first)}
    assert {o["Key"]: o["LastModified"] for o in on_s3.client().list_objects_v2(
        Bucket=on_s3.bucket, Prefix=f"exports/movements_csv/{first}/")["Contents"]} == stored
    records = parse_readback(on_s3.get(f"exports/movements_csv/{second}/{READBACK_FILE}")).to_pylist()
    assert {r["file"] for r in records if r["written_in"] == second} == written
    assert {r["written_in"] for r in records if r["file"] not in written} == {first}, "carried, not rewritten"
    expected = expected_files(source, True)
    assert on_s3.published_files() == expected
    read = _readme_reader(on_s3)  # a reader that follows the README finds every file, carried or written
    assert {file: table.num_rows for file, table in read.items()} == {file: len(rows) for file, rows in expected.items()}
    assert all(c.passed for c in result.get_asset_check_evaluations())
    assert {c.metadata["files_read"].value for c in result.get_asset_check_evaluations() if "files_read" in c.metadata} == {1}

    incremental = on_s3.snapshot()
    _, metadata = export()  # nothing changed: nothing published
    assert metadata["export_mode"] == "unchanged" and on_s3.published() == second
    _, full = export(FULL_REFRESH)
    assert (full["export_mode"], full["clients_rewritten"]) == ("full", SPEC.clients)
    third = on_s3.published()
    assert third not in (first, second)
    assert on_s3.snapshot() == incremental, "byte-identical to a full export of the same snapshot"
    # The current and the previous version stay. The first is no longer kept, but the second holds files in
    # it: exactly those stay; the two files the second replaced and the first's records are gone.
    assert _prefixes(on_s3) == {first, second, third}
    assert set(on_s3.version_files(first)) == {row["file"] for row in index if row["version"] == first}
    assert on_s3.published_files() == expected_files(source, True)
    export(FULL_REFRESH)  # now nothing kept holds a file in the first or the second: both are gone
    assert _prefixes(on_s3) == {third, on_s3.published()}


@pytest.mark.command
def test_a_killed_export_leaves_the_published_s3_version_as_it_was(published_s3, on_s3, env_home, tmp_path):
    version, files = published_s3
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    Path(env["DAGSTER_HOME"]).mkdir()
    config = tmp_path / "full.yaml"
    config.write_text(json.dumps(FULL_REFRESH))
    process = start_dagster_cli("export", "-c", str(config), env=env, cwd=env_home / "cwd")
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:  # until the new version has files
            if any(key.split("/")[2] != version for key in on_s3.keys("exports/movements_csv/.v-")):
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it wrote anything"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert on_s3.published() == version and on_s3.snapshot() == files
    leftovers = _prefixes(on_s3) - {version}
    assert leftovers, "the killed run had started a version"
    reader = S3Reader(on_s3)
    assert reader.leases() == leftovers, "a version being written holds a lease from its first object"
    export(FULL_REFRESH)  # the next run spares the killed run's version while its lease is live
    assert leftovers <= _prefixes(on_s3) and on_s3.snapshot() == files
    reader.lapse_leases()  # the lease's time passes
    export(FULL_REFRESH)  # the next run removes what the killed one left
    versions = _prefixes(on_s3)
    assert not versions & leftovers and len(versions) == 2 and on_s3.published() in versions
    assert on_s3.snapshot() == files


@pytest.mark.command
def test_the_cli_prints_the_s3_version_and_the_secret_reaches_the_tasks_and_appears_nowhere_else(
        on_s3, source, env_home, tmp_path):
    events, conf, dagster_home = tmp_path / "spark-events", tmp_path / "spark-conf", tmp_path / "dagster"
    for folder in (events, conf, dagster_home):
        folder.mkdir()
    (conf / "spark-defaults.conf").write_text(f"spark.eventLog.enabled true\nspark.eventLog.dir file://{events}\n"
                                              "spark.eventLog.compress false\n")
    home = env_home / "home"  # the default engine: the project's own Connect server, its event log on
    env = own_project_server({**os.environ, "DAGSTER_HOME": str(dagster_home)}, home, conf)
    try:
        done = subprocess.run([sys.executable, "-m", "desafio_dagster.cli", "run", "--job", "export"], env=env,
                              cwd=env_home / "cwd", capture_output=True, text=True, timeout=300)
        server = project_server_traces(home) if done.returncode == 0 else ""
    finally:
        stop_server(home)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    version = on_s3.published()
    assert f"{on_s3.output_dir}/movements_csv/{version}" in done.stdout
    assert f"the version named in {on_s3.output_dir}/movements_csv/_published" in done.stdout
    assert on_s3.published_files() == expected_files(source, True)
    _nothing_local(env_home)

    spark_log = "\n".join(p.read_text() for p in events.rglob("*") if p.is_file())
    assert '"spark.executorEnv.DESAFIO_TASK_SECRET":"*********(redacted)"' in spark_log.replace(" ", ""), \
        "the key that opens the tasks' sealed credentials is a redacted executor environment variable"
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [record] = instance.get_runs()
        dagster_events = "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(record.run_id))
        run_config = json.dumps(record.run_config)
    files = "\n".join(p.read_text(errors="replace") for p in dagster_home.rglob("*") if p.is_file() and p.suffix != ".db")
    assert f"{on_s3.output_dir}/movements_csv/.v-" in dagster_events, "the metadata names the version"
    places = {"Spark event log": spark_log, "Dagster event log and metadata": dagster_events, "run config": run_config,
              "Dagster's compute logs and storage files": files, "the run's output": out,
              "the Spark server's environment and log": server}
    for place, text in places.items():
        assert on_s3.secret not in text, f"the secret key appears in {place}"


def test_a_missing_bucket_fails_clearly_and_writes_nothing(on_s3, source, env_home, monkeypatch):
    monkeypatch.setenv("DESAFIO_OUTPUT_DIR", "s3://no-such-bucket/exports")
    message = failed_run_message(run("export"))
    assert "s3://no-such-bucket/exports/movements_csv" in message and "bucket no-such-bucket does not exist" in message
    assert on_s3.secret not in message
    _nothing_local(env_home)
