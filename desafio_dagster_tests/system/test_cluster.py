"""export on a real Spark standalone cluster (one master, one worker on 127.0.0.1) publishes
the same bytes as in local mode, and its tasks really run on the cluster's executor.

The master and the worker are started from the installed pyspark with the Java the project
finds (desafio_dagster.core.spark.java)."""

import os

import dagster as dg
import pytest

from desafio_dagster.core.output.version import FORMAT_FILE, INDEX_FILE, MANIFEST_FILE
from desafio_dagster.core.source import loading
from desafio_dagster.core.source.fakedata import generate
from desafio_dagster.core.spark.connect_server import state_dir, stop_server
from desafio_dagster.definitions import defs
from desafio_dagster_tests.helpers import dagster_cli, snapshot
from desafio_dagster_tests.system.spark_cluster import EXPORT_TIMEOUT, SPEC, Cluster, finished_tasks, full_jdk, get_json


@pytest.fixture
def spark_cluster(tmp_path):
    """A standalone cluster, starting in the background (call wait_ready()), stopped whatever happens."""
    cluster = Cluster(tmp_path / "spark-cluster", full_jdk())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_export_on_a_standalone_cluster_publishes_the_same_bytes_as_local_mode(
    spark_cluster, source_db, env_home, monkeypatch
):
    loading.replace(source_db, generate(SPEC))

    # Local mode, in this process, while the cluster starts.
    monkeypatch.setenv("DESAFIO_SPARK_MASTER", "local[*]")
    monkeypatch.setenv("DESAFIO_OUTPUT_DIR", str(env_home / "local"))
    result = defs.resolve_job_def("export").execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success, [e.step_failure_data.error.message for e in result.get_step_failure_events()]
    local = snapshot(env_home / "local" / "movements_csv")
    header_only = [name for name, data in local.items() if name != INDEX_FILE and data.count(b"\n") == 1]
    records = {INDEX_FILE, MANIFEST_FILE, FORMAT_FILE}  # snapshot() leaves out _readback.arrow (mtimes)
    assert len(local) == SPEC.clients + len(records) and records <= set(local) and header_only, \
        "one file per client plus the version's records, some header-only"

    # The cluster, from a fresh process (getOrCreate would reuse an in-process SparkContext).
    # The driver keeps a Spark event log, so the test sees where each task ran.
    spark_cluster.wait_ready()
    events, conf_dir, dagster_home = env_home / "spark-events", env_home / "driver-conf", env_home / "dagster"
    for folder in (events, conf_dir, dagster_home):
        folder.mkdir()
    (conf_dir / "spark-defaults.conf").write_text(
        f"spark.eventLog.enabled true\nspark.eventLog.dir file://{events}\n"
        "spark.eventLog.compress false\nspark.eventLog.rolling.enabled true\n"
    )
    returncode, out = dagster_cli("export", timeout=EXPORT_TIMEOUT, env={
        **os.environ,
        "DESAFIO_SPARK_MASTER": spark_cluster.url,
        "DESAFIO_OUTPUT_DIR": str(env_home / "cluster"),
        "DAGSTER_HOME": str(dagster_home),
        "JAVA_HOME": str(spark_cluster.java_home),  # the driver on the executors' Java
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_CONF_DIR": str(conf_dir),
    })
    assert returncode == 0 and "RUN_SUCCESS" in out, f"cluster export failed\n{out[-4000:]}\n{spark_cluster.log_tails()}"
    # The driver is the project's Spark Connect server, which outlives the run: `make stop` ends its application.
    assert stop_server(env_home / "home")

    # Same files, same bytes, _index.csv included.
    cluster = snapshot(env_home / "cluster" / "movements_csv")
    assert sorted(cluster) == sorted(local), "same file names"
    different = [name for name in local if cluster[name] != local[name]]
    assert not different, f"{len(different)} files differ between local mode and the cluster, e.g. {different[:5]}"

    # It ran on the cluster: the master lists the finished application, the worker ran its
    # executor, and every task, the per-client writers (publish.py's, named in the job's plan) included, ran on
    # that executor.
    state = spark_cluster.state()
    apps = [a for a in spark_cluster.completed_apps() if a["name"] == "desafio_dagster"]
    assert len(apps) == 1 and apps[0]["state"] == "FINISHED", f"{state}\n{spark_cluster.log_tails()}"
    app_id = apps[0]["id"]
    finished = get_json(f"{spark_cluster.worker_ui}/json/")["finishedexecutors"]
    executor_ids = {str(e["id"]) for e in finished if e["appid"] == app_id}
    assert executor_ids, f"the worker ran no executor for {app_id}: {finished}"
    assert all((spark_cluster.work_dir / app_id / i / "stderr").exists() for i in executor_ids)
    tasks = finished_tasks(events)
    assert tasks, f"no finished task in the driver's event log: {sorted(events.rglob('*'))}"
    off_cluster = [t for t in tasks if t[1] not in executor_ids or t[2] != "127.0.0.1"]
    assert not off_cluster, f"tasks that did not run on the worker's executors: {off_cluster[:5]}"
    assert "read_join_and_write_client_files" in "\n".join(p.read_text() for p in events.rglob("*") if p.is_file())
    # The source side shares no folder: the executors read Postgres themselves, and the driver
    # staged nothing under its DESAFIO_HOME (the output folder is still shared: see the README).
    staged = [p for p in (env_home / "home").rglob("*") if not p.is_relative_to(state_dir(env_home / "home"))]
    assert not staged, "nothing staged by the driver (the Connect server's own state aside)"
