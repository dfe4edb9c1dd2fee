"""movements_csv end to end: the published files against an independent oracle (SQL in
Postgres, read back with Python's csv module), atomic publication, bad input."""

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from desafio_dagster.core.output.store import open_store
from desafio_dagster.core.output.version import INDEX_FILE
from desafio_dagster_tests.helpers import (
    CONTRACT,
    FULL_REFRESH,
    SPEC,
    assert_untouched,
    expected_files,
    export,
    export_checks,
    exported_view,
    failed_run_message,
    free_port,
    full_refresh_file,
    ignores,
    output,
    own_project_server,
    published_files,
    run,
    snapshot,
    source_checks,
    start_dagster_cli,
)


@pytest.mark.parametrize("mask", [True, False])
def test_published_files_equal_the_sql_oracle_row_by_row(source, env_home, mask):
    result = run("export", {"ops": {"movements_csv": {"config": {"mask_card_numbers": mask}}}})
    assert result.success
    folder = output(env_home)
    expected = expected_files(source, mask)
    assert published_files(folder) == expected
    assert any(not rows for rows in expected.values()), "clients without movements get header-only files"
    assert "00000001_joao-jota-conceicao-filho.csv" in expected
    numbers = [row[6] for rows in expected.values() for row in rows]
    assert all(n.startswith("*" * 12) for n in numbers) == mask
    with open(folder / INDEX_FILE, encoding="utf-8", newline="") as handle:
        index = list(csv.DictReader(handle))
    assert [r["file"] for r in index] == sorted(expected)
    assert all(int(r["rows"]) == len(expected[r["file"]]) for r in index)
    assert index[0]["nome_associado"] == 'João "Jota"'
    evaluations = result.get_asset_check_evaluations()
    assert {(e.asset_key.to_user_string(), e.check_name) for e in evaluations} == export_checks()
    assert all(e.passed for e in evaluations)
    metadata = result.asset_materializations_for_node("movements_csv")[0].metadata
    assert metadata["dagster/row_count"].value == sum(map(len, expected.values()))
    assert metadata["clients"].value == SPEC.clients
    # The UI names the engine the run used: here the test run's own Connect server, reached as one's own.
    assert metadata["spark_engine"].value == f"Spark Connect at {os.environ['DESAFIO_SPARK_MASTER']} (a server of your own)"


def test_rerun_replaces_the_output_atomically_without_duplicates(source, env_home):
    assert run("export").success
    folder = output(env_home)
    first = snapshot(folder)
    first_version = folder.resolve()
    assert folder.is_symlink()
    assert run("export", FULL_REFRESH).success
    assert snapshot(folder) == first, "same source, same bytes; never appended"
    assert folder.resolve() != first_version
    second_version = folder.resolve()
    assert run("export", FULL_REFRESH).success
    versions = {p.name for p in folder.parent.iterdir() if p.name.startswith(".movements_csv.v-")}
    current = folder.resolve().name
    assert versions == {current, f"{current}-twin", second_version.name}, \
        "the current version, its twin (for the next export to recycle) and the previous version only"


def test_etl_runs_populate_then_export(database_url, env_home, source_db):
    config = {"ops": {"source_database": {"config": {"clients": 25, "movements_per_card": [0, 3], "seed": 2}}}}
    result = run("etl", config)
    assert result.success
    evaluated = {(e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations()}
    assert evaluated == source_checks() | export_checks()
    assert published_files(output(env_home)) == expected_files(source_db, True)


def test_tampered_output_fails_each_check(source, env_home):
    instance = dg.DagsterInstance.ephemeral()
    assert run("export", instance=instance).success
    folder = output(env_home).resolve()
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("_"))
    with_rows = [p for p in files if p.read_text().count("\n") > 2]
    # one more row in one file, a changed value in another, a missing file, a renamed header
    with open(with_rows[0], "a") as handle:
        handle.write(with_rows[0].read_text().splitlines()[1] + "\n")
    second = with_rows[1].read_text().splitlines()
    fields = next(csv.reader([second[1]]))
    fields[3] = "999.99"
    second[1] = ",".join(f'"{f}"' if "," in f or '"' in f else f for f in fields)
    with_rows[1].write_text("\n".join(second) + "\n")
    files[-1].unlink()
    with_rows[2].write_text(with_rows[2].read_text().replace("nome_associado", "nome", 1))
    result = run("checks", instance=instance)
    assert not result.success, "a failed blocking check fails the checks job"
    of_source = [e for e in result.get_asset_check_evaluations() if e.asset_key.path != ["movements_csv"]]
    assert {(e.asset_key.to_user_string(), e.check_name) for e in of_source} == source_checks()
    assert all(e.passed for e in of_source), "the source itself is intact"
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["movements_csv"]}
    assert set(evaluations) == {name for _, name in export_checks()}
    failed = {name for name, e in evaluations.items() if not e.passed}
    assert failed == {"total_rows_match_snapshot", "client_totals_match_snapshot", "one_file_per_client",
                      "headers_match_contract"}
    assert evaluations["one_file_per_client"].metadata["detail"].value == f"1 files missing or unexpected: missing {files[-1].name}"
    assert evaluations["headers_match_contract"].metadata["detail"].value.endswith(with_rows[2].name)


def test_io_manager_loads_the_published_files_as_a_spark_dataframe(source, env_home):
    assert run("export").success
    from desafio_dagster.defs.io_managers.per_client_csv import PerClientCsvIOManager
    from desafio_dagster.defs.resources.spark import SparkResource

    manager = PerClientCsvIOManager(spark=SparkResource(),
                                    base_dir=str(env_home / "data"))
    context = dg.build_input_context(asset_key=dg.AssetKey("movements_csv"),
                                     upstream_output=dg.build_output_context(asset_key=dg.AssetKey("movements_csv")))
    frame = manager.load_input(context)
    assert frame.columns == ["client_id", *CONTRACT]
    rows = frame.orderBy("client_id").collect()
    expected = expected_files(source, True)
    assert len(rows) == sum(map(len, expected.values()))
    first = next(r for r in rows if r.client_id == 1)
    assert [first[c] for c in CONTRACT] == expected["00000001_joao-jota-conceicao-filho.csv"][0]


def test_empty_source_fails_clearly_and_keeps_the_output(published, source):
    with source.connect() as conn:
        conn.execute("TRUNCATE associado, conta, cartao, movimento")
    assert "no clients" in failed_run_message(run("export")) and "populate" in failed_run_message(run("export"))
    assert_untouched(published)


def test_missing_table_fails_clearly_and_keeps_the_output(published, source):
    with source.connect() as conn:
        conn.execute("DROP TABLE movimento")
    assert re.search(r"sicooperative\.movimento missing.*populate", failed_run_message(run("export")))
    assert_untouched(published)


def test_unwritable_output_folder_fails_clearly(source, env_home, monkeypatch):
    blocker = env_home / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DESAFIO_OUTPUT_DIR", str(blocker / "out"))
    message = failed_run_message(run("export"))
    assert f"output folder {blocker / 'out'} is not writable" in message and "DESAFIO_OUTPUT_DIR" in message


@pytest.mark.parametrize(
    ("master", "expected"),
    [("spark://127.0.0.1:1", "cannot reach the Spark master at 127.0.0.1:1"), ("nonsense://x", "Spark failed to start")],
)
def test_bad_spark_master_fails_clearly_and_keeps_the_output(published, monkeypatch, master, expected):
    monkeypatch.setenv("DESAFIO_SPARK_MASTER", master)
    message = failed_run_message(run("export", FULL_REFRESH))
    assert expected in message and "DESAFIO_SPARK_MASTER" in message
    assert_untouched(published)


@pytest.mark.command
def test_missing_java_fails_clearly_and_keeps_the_output(published, tmp_path):
    """The project's Connect server would start on this Java (a server of one's own needs none here)."""
    env = own_project_server({**os.environ, "JAVA_HOME": str(tmp_path / "no-java"), "DAGSTER_HOME": str(tmp_path)},
                             tmp_path / "home")
    out, _ = start_dagster_cli("export", "-c", full_refresh_file(tmp_path), env=env).communicate(timeout=300)
    assert f"JAVA_HOME={tmp_path / 'no-java'} has no bin/java" in out
    assert_untouched(published)


@pytest.mark.command
def test_killed_run_leaves_the_previous_output_and_the_next_run_cleans_up(published, tmp_path):
    folder = published[0]
    before = set(folder.parent.glob(".movements_csv.v-*"))
    process = start_dagster_cli("export", "-c", full_refresh_file(tmp_path), env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    deadline = time.monotonic() + 240
    # Kill once the new version exists: from before the Spark job starts until it is audited and published.
    while not (new := {p for p in folder.parent.glob(".movements_csv.v-*") if not p.name.endswith("-twin")} - before):
        assert process.poll() is None and time.monotonic() < deadline, "export ended before it could be killed"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    [killed] = new
    assert folder.resolve() == published[2] and snapshot(folder) == published[1] and killed != published[2]
    assert run("export", FULL_REFRESH).success
    assert snapshot(folder) == published[1]
    assert not killed.exists() and not killed.with_name(f"{killed.name}-twin").exists(), \
        "the next run removes the killed run's version and its twin"
    assert list(folder.parent.glob(".movements_csv.v-*/.attempts")) == []


def _failing_first_attempts(task_writer, marker: Path):
    """The publisher's task writer, except that each task's first attempt fails once it has written
    the files of its first three batches (and says how many files in marker)."""
    from pyspark import TaskContext

    def writer(staging: str, reader=None, sealed: str = ""):
        write = task_writer(staging, reader, sealed)

        def write_or_fail(batches):
            context = TaskContext.get()
            if context.attemptNumber() > 0:
                yield from write(batches)
                return

            def three_batches_then_fail():
                for number, batch in enumerate(batches):
                    if number == 3:
                        written = list(Path(staging, ".attempts").glob(f"*-{context.taskAttemptId()}/*"))
                        marker.write_text(str(len(written)))
                        raise RuntimeError("the first attempt fails")
                    yield batch

            yield from write(three_batches_then_fail())

        return write_or_fail

    return writer


def test_a_failed_task_attempt_is_retried_without_duplicate_rows(published, source, tmp_path, monkeypatch):
    """A task attempt fails after it has written some client files: Spark retries the task (local[2,4]
    allows four attempts), the retry re-reads the same snapshot, and only the accepted attempt's files
    are published. The view as a DataFrame (arrow.maxRecordsPerBatch splits it into many batches): the
    attempt folders are the same whether a task joins its rows itself or receives them. A project server
    of the test's own: task retries are a master's setting."""
    from desafio_dagster.core.export import publish
    from desafio_dagster.core.spark.connect_server import stop_server
    from desafio_dagster.core.spark.spark_session import connect

    folder = published[0]
    marker = tmp_path / "failed-attempt"
    monkeypatch.setattr(publish, "_task_writer", _failing_first_attempts(publish._task_writer, marker))
    try:
        connected = connect("local[2,4]", {"spark.sql.execution.arrow.maxRecordsPerBatch": "20"},  # many batches
                            home=tmp_path / "spark")
        with exported_view(source, connected.session) as (view, snap):
            publish.publish_per_client(view.frame(), open_store(folder.parent, folder.name), snap.clients, by_client=True)
        connected.close()
    finally:
        stop_server(tmp_path / "spark")
    assert int(marker.read_text()) > 0, "the failed attempt had written files"
    assert published_files(folder) == expected_files(source, True)
    assert list(folder.resolve().glob(".attempts")) == [], "the failed attempts' folders are removed"


def _blocking_until_the_server_is_killed(task_writer, started: Path, killed: Path):
    """publish._task_writer whose tasks, on the first server, signal `started` and wait until that server was
    killed, then exit without writing; on a later server (`killed` exists) they write as usual."""

    def writer(staging: str, reader=None, sealed: str = ""):
        write = task_writer(staging, reader, sealed)

        def write_or_wait(batches):
            if not killed.exists():
                started.touch()
                while not killed.exists():
                    time.sleep(0.05)
                os._exit(1)  # this task's server is gone: it must not write
            yield from write(batches)

        return write_or_wait

    return writer


@pytest.mark.command
def test_a_spark_server_killed_mid_export_is_retried_on_a_new_server_and_publishes_once(
        published, source, env_home, tmp_path, monkeypatch):
    """The default engine (the project's own server, started by the export) is killed while its tasks run: the
    step fails as a lost connection (transient), its retry starts a new server, and one version is published,
    equal to the oracle."""
    from desafio_dagster.core.export import publish
    from desafio_dagster.core.spark.connect_server import running_server

    home = env_home / "home"
    for name, value in own_project_server(dict(os.environ), home).items():
        monkeypatch.setenv(name, value)
    for name in ("SPARK_CONNECT_AUTHENTICATE_TOKEN", "DESAFIO_TASK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    started, killed = tmp_path / "task-started", tmp_path / "server-killed"
    monkeypatch.setattr(publish, "_task_writer", _blocking_until_the_server_is_killed(publish._task_writer,
                                                                                      started, killed))
    victims = []

    def kill_the_server_once_a_task_runs():
        deadline = time.monotonic() + 180  # a bound, not a timing: the task signals when it runs
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        victims.append(running_server(home))
        os.kill(victims[0], signal.SIGKILL)
        killed.touch()

    killer = threading.Thread(target=kill_the_server_once_a_task_runs, daemon=True)
    killer.start()
    result = run("export", FULL_REFRESH)
    killer.join()
    assert result.success, failed_run_message(result)
    [retried] = [e.event_specific_data.error.cause.message for e in result.all_events
                 if e.event_type_value == "STEP_UP_FOR_RETRY"]  # the policy's retry, caused by the step's error
    assert "lost an executor or a connection" in retried and "\n" not in retried.strip(), retried
    assert running_server(home) not in (None, victims[0]), "the retry ran on a new server"
    folder = output(env_home)
    assert published_files(folder) == expected_files(source, True)
    versions = [p for p in folder.parent.iterdir() if p.name.startswith(".movements_csv.v-") and not p.name.endswith("-twin")]
    assert folder.resolve() != published[2] and len(versions) == 2, "published once: the new and the previous version"


def test_a_failing_spark_job_fails_clearly_and_keeps_the_output(published, source, spark_session):
    """A Spark job that fails for good (one row raises in Spark's code, or a task's Python code raises) leaves
    the published output, says Spark's own cause in one line, and is not a transient fault (not retried)."""
    from pyspark.sql import functions as F

    from desafio_dagster.core.errors import TransientError
    from desafio_dagster.core.export.publish import publish_per_client
    from desafio_dagster.core.spark.spark_session import SparkJobError

    def python_error(batches):
        for batch in batches:
            if 7 in batch.column("client_id").to_pylist():
                raise ValueError("no card for client 7")
            yield batch

    folder = published[0]
    with exported_view(source, spark_session) as (snapshot_view, snapshot):
        view = snapshot_view.frame()
        broken_in_spark = view.withColumn(
            "des_transacao_movimento",
            F.when(F.col("client_id") == 7, F.raise_error(F.lit("boom in client 7"))).otherwise(F.col("des_transacao_movimento")),
        )
        broken_in_python = view.mapInArrow(python_error, view.schema)
        for broken, cause in ((broken_in_spark, "boom in client 7"), (broken_in_python, "ValueError: no card for client 7")):
            with pytest.raises(SparkJobError) as raised:
                publish_per_client(broken, open_store(folder.parent, folder.name), snapshot.clients, by_client=True)
            message = str(raised.value)
            assert message.startswith("the Spark job writing the client files failed: ") and cause in message
            assert "\n" not in message and "log" not in message and not isinstance(raised.value, TransientError)
    assert_untouched(published)


@pytest.mark.command
def test_a_deployments_connect_server_serves_exports_without_a_token_and_opens_the_sealed_credentials(
        source, env_home, tmp_path, monkeypatch):
    """`python -m desafio_dagster.cli spark-connect` (the compose stack's spark-connect service): in the foreground,
    with the project's Spark settings, on every interface, no token; the tasks' key only in its environment. An
    export through it as sc:// is the oracle's, and names that engine."""
    from desafio_dagster.core.spark.sealed import new_key

    port, key = free_port(), new_key()
    environment = {k: v for k, v in os.environ.items() if k not in ("SPARK_CONNECT_AUTHENTICATE_TOKEN", "DESAFIO_POSTGRES_URL")}
    with open(tmp_path / "server.log", "w") as log:  # launched ignoring SIGTERM, as from a Dagster run in the background
        server = subprocess.Popen([sys.executable, "-m", "desafio_dagster.cli", "spark-connect", "--master", "local[2]",
                                   "--port", str(port)], env={**environment, "DESAFIO_TASK_SECRET": key},
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
                                  preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not listen within 120 s"
            time.sleep(0.2)
        monkeypatch.delenv("SPARK_CONNECT_AUTHENTICATE_TOKEN")
        monkeypatch.setenv("DESAFIO_SPARK_MASTER", f"sc://localhost:{port}")
        monkeypatch.setenv("DESAFIO_TASK_SECRET", key)
        _, metadata = export(FULL_REFRESH)
        assert metadata["spark_engine"] == f"Spark Connect at sc://localhost:{port} (a server of your own)"
        assert published_files(output(env_home)) == expected_files(source, True)
        assert server.poll() is None, "it serves the next run too"
        assert not ignores(server.pid, signal.SIGTERM), "docker stop's SIGTERM must stop it"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # not left running after the test
            raise


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
