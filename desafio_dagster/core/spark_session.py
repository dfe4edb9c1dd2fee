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

from desafio_dagster.core.errors import DesafioError
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
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SparkStartError(
            f"Spark failed to start with master {master!r} and JAVA_HOME={java}: {reason}. "
            f"Check DESAFIO_SPARK_MASTER and the Java installation"
        ) from error
