"""Start a SparkSession that works on a laptop and on a cluster. Pure: no Dagster.

Java: a Java 17 or 21 with the modules Spark needs (desafio_dagster.core.java), checked before Spark starts.
Python workers run this interpreter (PYSPARK_PYTHON), so they import pyarrow.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from importlib import resources

from pyspark.sql import SparkSession

from desafio_dagster.core.errors import DesafioError, TransientError, first_line
from desafio_dagster.core.java import JavaNotFound, find_java_home
from desafio_dagster.core.settings import environment

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
                   r"Connection refused|Broken pipe|RpcTimeoutException|Python worker exited unexpectedly", re.I)
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
    """The Java to run Spark on, as a JAVA_HOME (desafio_dagster.core.java). Probed once per process
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
            f"or fix DESAFIO_SPARK_MASTER ({master}); use local[*] to run Spark inside this process"
        ) from None


def prepare_environment() -> str:
    """Set JAVA_HOME and the Python of Spark's workers in this process; return JAVA_HOME.
    Call it before other threads run: changing the environment is not thread-safe."""
    java = java_home()
    os.environ["JAVA_HOME"] = java
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    return java


# Below this many rows an export is start-up bound, above it compute bound (bench/bench_export.py).
SHORT_JOB_ROWS = 3_000_000


def start_session(master: str = "local[*]", conf: dict[str, str] | None = None, app_name: str = "desafio_dagster",
                  short: bool = True) -> SparkSession:
    """A SparkSession on master with DEFAULT_CONF overridden by conf. short: the session runs a
    short job (see SHORT_JOB_ROWS), so in local mode its JVM compiles with the quick JIT tier only."""
    _check_master_reachable(master)
    java = prepare_environment()
    settings = {**DEFAULT_CONF, **(conf or {})}
    java_options = {
        "spark.driver.extraJavaOptions": [f"-Dlog4j2.configurationFile={LOG4J_CONFIG}"],
        "spark.executor.extraJavaOptions": [f"-Dlog4j2.configurationFile={LOG4J_CONFIG}"],
    }
    if master.startswith("local") and short:
        # Short local runs are start-up bound: the quick JIT tier alone saves about 4 s of a 1M-row
        # export here (23.7 -> 19.8 s), but costs 19 s at 10M (78.5 -> 97.2 s), where the full JIT pays.
        java_options["spark.driver.extraJavaOptions"].append("-XX:TieredStopAtLevel=1")
    for key, options in java_options.items():
        settings[key] = " ".join([*options, settings.get(key, "")]).strip()
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    running = SparkSession.getActiveSession()
    if running is not None and any(running.sparkContext.getConf().get(key) != value for key, value in settings.items()
                                   if key.startswith("spark.executorEnv.")):
        # getOrCreate would hand back this session, whose executors lack the environment asked for
        # (a password, AWS credentials): a process that runs several jobs, e.g. a test session.
        running.stop()
    try:
        return builder.getOrCreate()
    except Exception as error:  # py4j and the launcher raise many kinds
        raise SparkStartError(
            f"Spark failed to start with master {master!r} and JAVA_HOME={java}: {first_line(error)}. "
            f"Check DESAFIO_SPARK_MASTER and the Java installation"
        ) from error
