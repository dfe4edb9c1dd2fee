"""export on a Spark standalone cluster whose worker shares NO folder with the driver: the tasks read the
source from Postgres themselves and write each client's file straight to S3 (moto's server on loopback).
The worker starts without any AWS or DESAFIO variable, in a folder of its own: the credentials reach its
executors only as spark.executorEnv.* (redacted in Spark's event log), and nothing is written locally."""

import os
import sys
from pathlib import Path

from desafio_dagster.core.source import loading
from desafio_dagster.core.source.fakedata import generate
from desafio_dagster.core.spark.connect_server import state_dir, stop_server
from desafio_dagster_tests.helpers import dagster_cli, expected_files
from desafio_dagster_tests.system.spark_cluster import (
    EXPORT_TIMEOUT,
    SPEC,
    Cluster,
    finished_tasks,
    full_jdk,
    get_json,
)


class IsolatedCluster(Cluster):
    """A master and a worker whose environment holds no AWS_* or DESAFIO_* variable and whose working
    directory and work dir are their own."""

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in super()._env().items() if not k.startswith(("AWS_", "DESAFIO_"))}
        return {**env, "PYSPARK_PYTHON": sys.executable}

    def _launch(self, name: str) -> None:
        import subprocess

        cwd = self.root / f"{name}-cwd"
        cwd.mkdir(exist_ok=True)
        with open(self.logs / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(self.commands[name], env=self._env(), stdout=log, cwd=cwd,
                                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                    start_new_session=True)


def test_export_on_a_cluster_without_a_shared_folder_publishes_to_s3(s3, source_db, tmp_path):
    loading.replace(source_db, generate(SPEC))
    cluster = IsolatedCluster(tmp_path / "spark-cluster", full_jdk())
    try:
        cluster.start()
        driver = tmp_path / "driver"  # the driver's own folders: its cwd, DESAFIO_HOME, DAGSTER_HOME
        events, conf_dir, dagster_home, home, cwd = (driver / n for n in ("events", "conf", "dagster", "home", "cwd"))
        for folder in (events, conf_dir, dagster_home, home, cwd):
            folder.mkdir(parents=True)
        (conf_dir / "spark-defaults.conf").write_text(
            f"spark.eventLog.enabled true\nspark.eventLog.dir file://{events}\nspark.eventLog.compress false\n")
        cluster.wait_ready()
        returncode, out = dagster_cli("export", timeout=EXPORT_TIMEOUT, cwd=cwd, env={
            **os.environ, **s3.environment,
            "DESAFIO_OUTPUT_DIR": s3.output_dir,
            "DESAFIO_SPARK_MASTER": cluster.url,
            "DESAFIO_HOME": str(home),
            "DAGSTER_HOME": str(dagster_home),
            "JAVA_HOME": str(cluster.java_home),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_CONF_DIR": str(conf_dir),
        })
        assert returncode == 0 and "RUN_SUCCESS" in out, f"cluster export failed\n{out[-4000:]}\n{cluster.log_tails()}"
        assert stop_server(home), "the driver: the project's Spark Connect server, which `make stop` ends"

        # The oracle's files, in S3.
        assert s3.published_files() == expected_files(source_db, True)

        # Every task ran on the worker's executor, the per-client writers included.
        [app] = [a for a in cluster.completed_apps() if a["name"] == "desafio_dagster"]
        executors = {str(e["id"]) for e in get_json(f"{cluster.worker_ui}/json/")["finishedexecutors"]
                     if e["appid"] == app["id"]}
        tasks = finished_tasks(events)
        assert executors and tasks and all(t[1] in executors for t in tasks), tasks[:5]
        assert "read_join_and_write_client_files" in "\n".join(p.read_text() for p in events.rglob("*") if p.is_file())

        # Nothing written locally: no CSV on the worker's side, nothing in the driver's cwd or DESAFIO_HOME.
        worker_side = [p for p in cluster.root.rglob("*") if p.suffix == ".csv" or p.name.startswith(".v-")]
        assert worker_side == []
        assert list(cwd.iterdir()) == [] and not [p for p in home.rglob("*") if p.is_file()
                                                  and not p.is_relative_to(state_dir(home))]
        spark_log = "\n".join(p.read_text() for p in events.rglob("*") if p.is_file())
        # The tasks get the AWS variables sealed; the key that opens them is a redacted executor variable.
        assert '"spark.executorEnv.DESAFIO_TASK_SECRET":"*********(redacted)"' in spark_log.replace(" ", "")
        executor_logs = "\n".join(p.read_text(errors="replace") for p in Path(cluster.work_dir).rglob("*") if p.is_file())
        for place, text in {"Spark event log": spark_log, "executor logs": executor_logs, "run output": out}.items():
            assert s3.secret not in text, f"the secret key appears in the {place}"
    finally:
        stop_server(tmp_path / "driver" / "home")
        cluster.stop()
