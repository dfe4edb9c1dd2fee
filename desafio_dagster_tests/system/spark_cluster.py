"""A Spark standalone cluster (one master, one worker on 127.0.0.1) for the system tests, started from the
installed pyspark with the Java the project finds (desafio_dagster.core.spark.java), and what they read of it."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pyspark
import pytest

from desafio_dagster.core.source.fakedata import GenerationSpec
from desafio_dagster.core.spark.java import JavaNotFound, find_java_home
from desafio_dagster_tests.helpers import free_port

# A few hundred clients; movements_per_card starts at 0, so some clients have none.
SPEC = GenerationSpec(clients=300, accounts_per_client=(1, 2), cards_per_account=(1, 2), movements_per_card=(0, 6), seed=31)
SPARK_HOME = Path(pyspark.__file__).parent
READY_TIMEOUT = 60
EXPORT_TIMEOUT = 180


def full_jdk() -> Path:
    """The Java the project finds (JAVA_HOME, else the system's); fails the test when there is none."""
    try:
        return Path(find_java_home(os.environ.get("JAVA_HOME")))
    except JavaNotFound as error:
        pytest.fail(f"the Spark cluster test needs a Java 17 or 21: {error}")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return f"--- {path.name} ---\n" + "\n".join(text.splitlines()[-lines:])


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> None:
    """Stop a daemon and everything it started (the worker's executors and their Python workers):
    SIGTERM to its process group, then SIGKILL to whatever is left in the group."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


class Cluster:
    """A Spark standalone master and one worker (2 cores, 2g) on 127.0.0.1, on free ports.

    start() returns at once: the master starts, and a thread starts the worker as soon as the
    master listens (a worker that finds no master retries only 5 to 15 s later). wait_ready()
    blocks until the master lists the worker ALIVE, so the test can do other work meanwhile."""

    def __init__(self, root: Path, java_home: Path):
        self.root, self.java_home = root, java_home
        self.logs, self.work_dir = root / "logs", root / "work"
        self.port, master_ui_port, worker_ui_port = free_port(), free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.master_ui, self.worker_ui = f"http://127.0.0.1:{master_ui_port}", f"http://127.0.0.1:{worker_ui_port}"
        spark_class = str(SPARK_HOME / "bin" / "spark-class")
        self.commands = {
            "master": [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                       "--port", str(self.port), "--webui-port", str(master_ui_port)],
            "worker": [spark_class, "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                       "--cores", "2", "--memory", "2g", "--webui-port", str(worker_ui_port),
                       "--work-dir", str(self.work_dir)],
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self._deadline = 0.0
        self._cancel = threading.Event()
        self._worker_starter = threading.Thread(target=self._start_worker_when_master_listens, daemon=True)

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SPARK_HOME": str(SPARK_HOME),
            "JAVA_HOME": str(self.java_home),
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOG_DIR": str(self.logs),
            "SPARK_PID_DIR": str(self.root),
            "SPARK_WORKER_DIR": str(self.work_dir),
            "SPARK_CONF_DIR": str(self.root / "conf"),  # empty: nothing from a Spark installed on the machine
        }

    def _launch(self, name: str) -> None:
        with open(self.logs / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(self.commands[name], env=self._env(), stdout=log,
                                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                    start_new_session=True)

    def _start_worker_when_master_listens(self) -> None:
        while not self._cancel.is_set() and time.monotonic() < self._deadline:
            if self.processes["master"].poll() is not None:
                return
            if _port_open(self.port):
                self._launch("worker")
                return
            time.sleep(0.1)

    def start(self) -> None:
        for folder in (self.logs, self.work_dir, self.root / "conf"):
            folder.mkdir(parents=True)
        self._deadline = time.monotonic() + READY_TIMEOUT
        self._launch("master")
        self._worker_starter.start()

    def wait_ready(self) -> None:
        while True:
            dead = [name for name, p in list(self.processes.items()) if p.poll() is not None]
            assert not dead, f"Spark {dead} exited at start-up\n{self.log_tails()}"
            try:
                if any(w.get("state") == "ALIVE" for w in self.state().get("workers", [])):
                    return
            except OSError:
                pass
            assert time.monotonic() < self._deadline, f"no ALIVE worker after {READY_TIMEOUT} s\n{self.log_tails()}"
            time.sleep(0.2)

    def stop(self) -> None:
        self._cancel.set()
        if self._worker_starter.is_alive():
            self._worker_starter.join()
        for name in ("worker", "master"):
            if name in self.processes:
                _stop(self.processes[name])

    def state(self) -> dict:
        return get_json(f"{self.master_ui}/json/")

    def completed_apps(self, bound: float = 60.0) -> list[dict]:
        """The master's completed applications, once it has any: a driver that stops unregisters
        asynchronously (bound: a master that never records it fails the test's own assertion)."""
        deadline = time.monotonic() + bound
        while not (apps := self.state().get("completedapps", [])) and time.monotonic() < deadline:
            time.sleep(0.2)
        return apps

    def log_tails(self) -> str:
        return "\n".join(tail(self.logs / f"{name}.log") for name in self.commands)


def finished_tasks(event_log_dir: Path) -> list[tuple[str, str, str]]:
    """(stage name, executor id, host) of every finished task in the driver's event log."""
    stages, tasks = {}, []
    for path in sorted(p for p in event_log_dir.rglob("events_*") if p.is_file()):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event.get("Event") == "SparkListenerStageSubmitted":
                stages[event["Stage Info"]["Stage ID"]] = event["Stage Info"]["Stage Name"]
            elif event.get("Event") == "SparkListenerTaskEnd":
                tasks.append((event["Stage ID"], event["Task Info"]["Executor ID"], event["Task Info"]["Host"]))
    return [(stages.get(stage, "?"), executor, host) for stage, executor, host in tasks]
