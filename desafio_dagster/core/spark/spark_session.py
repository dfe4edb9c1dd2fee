"""Spark for a run: a Spark Connect session on a long-lived server, on a laptop and on a cluster, and
Spark's errors explained in one line. Pure: no Dagster.

Java: a Java 17 or 21 with the modules Spark needs (desafio_dagster.core.spark.java), checked before the server starts.
Python workers run this interpreter (PYSPARK_PYTHON), so they import pyarrow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import tempfile
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from desafio_dagster.core import settings
from desafio_dagster.core.errors import DISK_FULL, DesafioError, TransientError, disk_full, first_line
from desafio_dagster.core.settings import environment
from desafio_dagster.core.spark.connect_server import (
    ConnectServer,
    ConnectServerError,
    ensure_server,
    is_alive,
    state_dir,
)
from desafio_dagster.core.spark.connect_server import serve as serve_connect
from desafio_dagster.core.spark.java import JavaNotFound, find_java_home
from desafio_dagster.core.spark.sealed import TASK_KEY_VARIABLE, seal

if TYPE_CHECKING:  # Spark Connect's client (with pandas) is imported by the runs that open a session only
    from pyspark.sql.connect.session import SparkSession

LOG4J_CONFIG = resources.files("desafio_dagster").joinpath("log4j2.properties")
DEFAULT_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "2g",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.shuffle.partitions": "8",
}


class SparkStartError(DesafioError):
    """Spark could not start; the message says why and what to change."""


class SparkJobError(DesafioError):
    """A Spark job failed for a reason that another attempt would meet again (out of memory, an error in
    a task's code or data, an analysis error): not retried."""


class SparkJobLost(TransientError):
    """A Spark job failed because an executor or a connection was lost: worth another attempt."""


# What Spark says when the cluster, not the job, failed: these alone are retried.
_LOST = re.compile(r"ExecutorLostFailure|executor \S+ (?:was )?lost|Lost executor|FetchFailed|Connection reset|"
                   r"Connection refused|Broken pipe|RpcTimeoutException|Python worker exited unexpectedly|"
                   r"StatusCode\.UNAVAILABLE|Socket closed|failed to connect to all addresses", re.I)
_MEMORY = re.compile(r"OutOfMemoryError|Not enough memory|Java heap space|GC overhead limit|MemoryError|"
                     r"exceeds? .{0,40}memory", re.I)
# An exception's line in a Java or Python trace: "org.apache.spark.SparkException: Job aborted ...",
# "Caused by: java.lang.OutOfMemoryError: Java heap space", "ValueError: bad value".
_EXCEPTION_LINE = re.compile(r"^(?:Caused by: |: )?((?:[A-Za-z_$][\w$]*\.)*[A-Za-z_$][\w$]*(?:Error|Exception)): (.+)$")
_WRAPPERS = ("Job aborted due to stage failure", "An error occurred while calling", "Exception thrown in awaitResult")


def _exceptions(lines: list[str]) -> list[str]:
    """'Name: message' of each line that names an exception, wrappers left out."""
    return [f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}" for line in lines
            if (m := _EXCEPTION_LINE.match(line)) and not m.group(2).startswith(_WRAPPERS)]


def spark_cause(error: BaseException, most: int = 400) -> str:
    """Spark's own cause of a failed job, in one line: the exception a task's Python code raised (the
    line after its traceback's frames), else the root cause of the Java trace (its last 'Caused by:'),
    else its first exception that is not a wrapper, else the first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    traceback = "Traceback (most recent call last):"
    python = _exceptions(lines[lines.index(traceback) + 1:]) if traceback in lines else []
    root = _exceptions([line for line in lines if line.startswith("Caused by: ")][-1:])
    causes = python or root or _exceptions(lines) or [first_line(error)]
    return causes[0] if len(causes[0]) <= most else causes[0][: most - 1] + "…"


def spark_job_error(error: BaseException, doing: str) -> DesafioError:
    """An explained error for a failed Spark job: its cause in one line and what to change; transient
    (SparkJobLost) only when an executor or a connection was lost."""
    text, cause = str(error), spark_cause(error)
    if any(words in text for words in DISK_FULL):
        return SparkJobError(f"the Spark job {doing} failed: {disk_full(cause)}")
    if _MEMORY.search(text):
        return SparkJobError(f"the Spark job {doing} ran out of memory: {cause}. Give Spark more memory (the spark "
                             f"resource's spark_config: spark.driver.memory, spark.executor.memory); the previous "
                             f"output is untouched")
    if _LOST.search(text):
        return SparkJobLost(f"the Spark job {doing} lost an executor or a connection: {cause}; the previous output "
                            f"is untouched")
    return SparkJobError(f"the Spark job {doing} failed: {cause}. Another attempt would fail the same way, so the "
                         f"step is not retried; the previous output is untouched")


_java_homes: dict[str, str] = {}  # JAVA_HOME as found -> as checked or chosen


def java_home() -> str:
    """The Java to run Spark on, as a JAVA_HOME (desafio_dagster.core.spark.java). Probed once per process
    and setting: each probe starts a JVM."""
    configured = environment("JAVA_HOME")  # blank counts as unset
    if configured not in _java_homes:
        try:
            chosen = find_java_home(configured)
        except JavaNotFound as error:
            raise SparkStartError(str(error)) from None
        _java_homes[configured] = _java_homes[chosen] = chosen
    return _java_homes[configured]


def _check_master_reachable(master: str) -> None:
    """Fail fast on an unreachable standalone master (Spark itself retries for a minute)."""
    match = re.fullmatch(r"spark://([^:/]+):(\d+)", master)
    if not match:
        return
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as error:
        raise SparkStartError(
            f"cannot reach the Spark master at {host}:{port} ({error.strerror or error}): start the cluster, "
            f"or fix DESAFIO_SPARK_MASTER ({master}); use local[*] to run Spark on this machine"
        ) from None


def _split(conf: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(the server's static settings, the session's SQL settings): Connect sets only spark.sql.* per session."""
    static = {key: value for key, value in conf.items() if not key.startswith("spark.sql.")}
    return static, {key: value for key, value in conf.items() if key.startswith("spark.sql.")}


_LOCAL = re.compile(r"local(?:\[(\*|\d+)(?:,\d+)?\])?")  # local, local[N], local[N,F], local[*]
_CLUSTER = re.compile(r"spark://[^/]+|yarn|k8s://.+")


def _local_cores(master: str) -> int | None:
    """The task slots of a local master."""
    match = _LOCAL.fullmatch(master)
    if not match:
        return None
    return os.cpu_count() or 1 if match.group(1) == "*" else int(match.group(1) or 1)


@dataclass(frozen=True)
class Connected:
    """A Spark Connect session and what a run needs besides it."""

    session: SparkSession
    task_key: str  # seals the tasks' credentials (sealed.py); empty if the executors have none
    engine: str  # which engine, for the run's log and the UI
    slot: int | None = None  # the lock on the session's slot (see _SessionSlot), held until close()
    server_pid: int | None = None  # the project's server, on this machine

    def alive(self) -> bool:
        """False once the project's server is known to be gone (a server of your own: assumed alive)."""
        return self.server_pid is None or is_alive(self.server_pid)

    def seal(self, environment: dict[str, str]) -> str:
        """environment sealed for the tasks; a clear error if it holds secrets the executors could not open."""
        if environment and not self.task_key:
            raise SparkStartError(
                f"the tasks need credentials ({', '.join(sorted(environment))}) but {TASK_KEY_VARIABLE} is not set: "
                f"set it here and in the executors' environment of your Connect server (a Fernet key: python -c "
                f"'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')")
        return seal(environment, self.task_key)

    def close(self) -> None:
        """Close the session (kept on the server for the next run that takes its slot) and free its slot."""
        with contextlib.suppress(Exception):  # a lost server: nothing to close there
            self.session.stop()
        if self.slot is not None:
            os.close(self.slot)


SESSION_SLOTS = 8


class _SessionSlot:
    """One of the SESSION_SLOTS server sessions that this machine's runs take in turn, one run at a time each
    (a lock file per slot: in the project's server's own folder, else in a per-user folder). A Connect
    session's Python workers belong to it (Spark isolates each session's artifacts), so a run that
    reattaches to the slot's session finds them warm: a new session pays a Python worker start and its
    imports (about 3 s here) on its first job. The session ids derive from the folder too: processes that
    do not share the locks never share a session. The slot's file remembers the settings its last run set,
    so that the next one starts from the server's."""

    def __init__(self, url: str, token: str, folder: Path | None):
        import fcntl  # POSIX only: the definitions load without it

        folder = folder or Path(tempfile.gettempdir()) / f"desafio-spark-sessions-{os.getuid()}" / \
            hashlib.sha256(url.encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if folder.stat().st_uid != os.getuid():
            raise SparkStartError(f"{folder} belongs to another user: remove it, or set TMPDIR to a folder of yours")
        self.fd = None
        for number in range(SESSION_SLOTS):
            fd = os.open(folder / f"{number}.json", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.fd, self.number = fd, number
            break
        self.seed = f"{url}|{socket.gethostname()}|{folder}|{hashlib.sha256(token.encode()).hexdigest()}"
        self.state = self._read()

    def _read(self) -> dict:
        if self.fd is None:
            return {}
        try:
            state = json.loads(os.pread(self.fd, 1 << 16, 0) or b"{}")
            return state if isinstance(state, dict) else {}
        except ValueError:
            return {}

    def write(self, **state: Any) -> None:
        assert self.fd is not None, "a slot is held before its state is written"
        self.state = {**self.state, **state}
        data = json.dumps(self.state).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def session_id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.seed}|{self.number}|{self.state.get('generation', 0)}"))


def _open_session(url: str, token: str, session_conf: dict[str, str],
                  ours: Path | None) -> tuple[SparkSession, int | None]:
    """A session on the server at url with session_conf set: a slot's session if one is free (warm), else a
    new one. Whatever a killed run left running in the slot's session is interrupted first. ours: the
    project's own server's folder, on this machine: its slots are there, and a lost connection to it is
    given up after a few seconds (the step's retry starts a new server), not after pyspark's ten minutes
    meant for a remote one."""
    from pyspark.sql.connect.client import DefaultChannelBuilder
    from pyspark.sql.connect.client.retries import DefaultPolicy
    from pyspark.sql.connect.session import SparkSession

    slot = _SessionSlot(url, token, ours / "sessions" if ours else None)
    for attempt in range(2):
        parameters = ";".join(f"{name}={value}" for name, value in (
            ("token", token), ("session_id", slot.session_id() if slot.fd is not None else "")) if value)
        session = SparkSession.builder.channelBuilder(
            DefaultChannelBuilder(f"{url}/;{parameters}" if parameters else url)).create()
        if ours:
            session.client.set_retry_policies([DefaultPolicy(max_retries=4, max_backoff=2000)])
        if slot.fd is None:
            break
        session.release_session_on_close = False  # stop() closes the connection; the session stays warm
        try:
            session.interruptAll()  # a run killed in this slot may have left its job running
            break
        except Exception as error:  # the server closed this session (idle too long, or restarted): a new one
            session.stop()
            if attempt or "SESSION_CLOSED" not in str(error):
                raise
            slot.write(generation=slot.state.get("generation", 0) + 1, keys=[])
    if slot.fd is not None:  # the last run's temporary views and settings go
        for table in session.catalog.listTables():
            if table.isTemporary:
                session.catalog.dropTempView(table.name)
    for name in slot.state.get("keys", []):
        if name not in session_conf:
            session.conf.unset(name)
    for name, value in session_conf.items():
        session.conf.set(name, value)
    if slot.fd is not None:
        slot.write(keys=sorted(session_conf))
    return session, slot.fd


def _check_master(master: str, setting: str = "DESAFIO_SPARK_MASTER") -> None:
    """A master the project runs a Connect server for: local[...] or spark://host:port (setting: where it came from)."""
    if not (_LOCAL.fullmatch(master) or _CLUSTER.fullmatch(master)):
        choices = ("local[*], spark://host:7077, or sc://host:15002 for a Spark Connect server of your own"
                   if setting == "DESAFIO_SPARK_MASTER" else "local[*] or spark://host:7077")
        raise SparkStartError(f"Spark failed to start: {master!r} is not a Spark master. Set {setting} to {choices}")


def server_conf(master: str, conf: dict[str, str] | None = None) -> dict[str, str]:
    """The static settings of a Connect server the project runs for master: DEFAULT_CONF overridden by conf's."""
    static = _split({**DEFAULT_CONF, **(conf or {})})[0]
    if (cores := _local_cores(master)) is not None:
        static.setdefault("spark.default.parallelism", str(cores))
    for side in ("driver", "executor"):
        key = f"spark.{side}.extraJavaOptions"
        static[key] = f"-Dlog4j2.configurationFile={LOG4J_CONFIG} {static.get(key, '')}".strip()
    # The server outlives the runs: once idle for a minute, G1 collects and gives unused heap back to the OS.
    static["spark.driver.extraJavaOptions"] = f"-XX:G1PeriodicGCInterval=60000 {static['spark.driver.extraJavaOptions']}"
    return static


def serve(master: str, port: int) -> NoReturn:
    """Become a Spark Connect server for master with the project's settings, in the foreground, listening on
    every interface without a token: a deployment's service (the compose stack's spark-connect), whose private
    network is its boundary. The executors' environment holds the tasks' key (DESAFIO_TASK_SECRET): a cluster's
    workers', or with a local master this process's own."""
    _check_master(master, "--master")
    serve_connect(master, {**server_conf(master), "spark.connect.grpc.binding.port": str(port)})


def project_server(master: str = "local[*]", conf: dict[str, str] | None = None,
                   home: Path | None = None) -> ConnectServer:
    """The project's Connect server for home (DESAFIO_HOME) with master and DEFAULT_CONF overridden by conf's
    static settings: reused if one runs as asked, else started (connect_server.py)."""
    _check_master(master)
    _check_master_reachable(master)
    home = home or settings.HOME.path()
    try:
        return ensure_server(home, master, server_conf(master, conf), environment("JAVA_HOME"), java_home)
    except ConnectServerError as error:
        raise SparkStartError(f"Spark failed to start: {error}. Check DESAFIO_SPARK_MASTER ({master}) and the Java "
                              f"installation") from None


def connect(master: str = "local[*]", conf: dict[str, str] | None = None, home: Path | None = None) -> Connected:
    """A new Spark Connect session (one per run: sessions on one server are isolated).

    master sc://host:port: a Connect server of your own (its token from SPARK_CONNECT_AUTHENTICATE_TOKEN, the
    tasks' key from DESAFIO_TASK_SECRET); conf's spark.sql.* settings apply, the rest is the server's.
    Any other master (local[*], spark://host:7077): the project's own server (project_server)."""
    session_conf = _split({**DEFAULT_CONF, **(conf or {})})[1]
    server = None if master.startswith("sc://") else project_server(master, conf, home)
    if server is None:
        url, token, key = master.split("/;")[0], environment("SPARK_CONNECT_AUTHENTICATE_TOKEN"), \
            environment(TASK_KEY_VARIABLE)
        engine = f"Spark Connect at {url} (a server of your own)"
    else:
        url, token, key = server.url, server.token, server.task_key
        engine = f"Spark Connect at {server.url}: the project's server (pid {server.pid}, master {master})"
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"  # pyspark.sql.functions and friends build Connect plans
    try:
        session, slot = _open_session(url, token, session_conf, state_dir(server.home) if server else None)
    except Exception as error:  # grpc and pyspark raise many kinds
        kind = SparkJobLost if _LOST.search(str(error)) else SparkStartError  # a server restarting may answer later
        raise kind(f"cannot open a Spark Connect session at {url}: {first_line(error)}. "
                   f"Check DESAFIO_SPARK_MASTER and that the server runs") from None
    return Connected(session, key, engine, slot, server.pid if server else None)


def task_slots(spark: SparkSession) -> int:
    """How many tasks Spark runs at once: spark.default.parallelism if the server sets it (the project's
    does for a local master), else the partitions Spark gives a range by default (one per core of a cluster)."""
    from pyspark.sql import functions as F

    try:
        configured = spark.conf.get("spark.default.parallelism", None)
        if configured:
            return int(configured)
        return spark.range(0, 1 << 16).select(F.spark_partition_id().alias("p")).distinct().count()
    except Exception as error:  # grpc and pyspark raise many kinds
        raise spark_job_error(error, "counting the task slots") from None
