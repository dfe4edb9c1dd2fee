"""The project's Spark Connect server: one long-lived Spark driver per DESAFIO_HOME that every run reaches
over Spark Connect, so a run pays no JVM or Python-worker start. Pure: no Dagster.

Why not pyspark's own reuse (SPARK_LOCAL_CONNECT_REUSE): it keeps one server per user, reuses it whatever
master, memory or Java a later run asks for, and refuses to start while a mismatched one runs. This module
keeps one per DESAFIO_HOME (a checkout), describes what the server was started with in a fingerprint
(Spark, master, static settings, Java, Python, the project's code: reused Python workers keep the code
they imported), and replaces a server whose fingerprint differs, that died or that stopped answering.

Its state, in DESAFIO_HOME/spark-connect/ (mode 0700): server.json (0600: pid, port, the Connect token, the
tasks' key, the fingerprint), server.log, and a lock file that serialises starting and stopping. The
server listens on 127.0.0.1 only and needs the token: another user, or another checkout, cannot use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pyspark

from desafio_dagster.core.errors import DesafioError
from desafio_dagster.core.spark.sealed import TASK_KEY_VARIABLE, new_key

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
START_TIMEOUT = 120.0
# A server starts with SIGTERM at its default: an ignored SIGTERM passes on to what a process starts, and a JVM
# started so never stops on it (docker stop, _terminate). A run may ignore it without asking: Dagster gives
# SIGTERM the handler of SIGINT (dagster._utils.interrupts), and SIGINT is ignored in a shell's background job.
_SIGTERM_AT_DEFAULT = ("import os, signal, sys; signal.signal(signal.SIGTERM, signal.SIG_DFL); "
                       "os.execv(sys.argv[1], sys.argv[1:])")
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|CREDENTIAL", re.I)


class ConnectServerError(DesafioError):
    """The Spark Connect server could not start; the message holds the cause from its log."""


@dataclass(frozen=True)
class ConnectServer:
    """How to reach a running server."""

    url: str  # sc://localhost:port
    token: str  # the Connect bearer token
    task_key: str  # the key that seals the tasks' environment (sealed.py)
    pid: int
    master: str
    home: Path


def state_dir(home: Path) -> Path:
    return Path(home) / "spark-connect"


def code_fingerprint() -> str:
    """The project's code as this process sees it: an edit must not meet Python workers that imported the old code."""
    package = Path(__file__).resolve().parents[2]  # desafio_dagster/
    files = sorted((str(p.relative_to(package)), stat.st_size, stat.st_mtime_ns)
                   for p in package.rglob("*.py") if (stat := p.stat()))
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]


def _spark_defaults() -> str:
    """Spark's own defaults file (SPARK_CONF_DIR/spark-defaults.conf), which the server reads too."""
    folder = os.environ.get("SPARK_CONF_DIR", "")
    try:
        return f"{folder}:{(Path(folder) / 'spark-defaults.conf').read_text()}" if folder else ""
    except OSError:
        return folder


def fingerprint(master: str, conf: dict[str, str], java_setting: str) -> str:
    described = {"spark": pyspark.__version__, "master": master, "conf": sorted(conf.items()), "java": java_setting,
                 "python": sys.executable, "code": code_fingerprint(), "defaults": _spark_defaults()}
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[Path]:
    import fcntl  # POSIX only: the definitions load without it

    folder = state_dir(home)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(folder / "server.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        yield folder


def _load(folder: Path) -> dict | None:
    try:
        state = json.loads((folder / "server.json").read_text())
        return state if isinstance(state, dict) and {"pid", "port", "token", "task_key", "fingerprint"} <= state.keys() \
            else None
    except (OSError, ValueError):
        return None


def _is_ours(pid: int, folder: Path) -> bool:
    """pid is a live Connect server started for this state folder, by this user."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return False
    marker = f"-Ddesafio.connect.state={folder}".encode()
    return owner == os.getuid() and SERVER_CLASS.encode() in cmdline and any(marker in arg for arg in cmdline)


def is_alive(pid: int) -> bool:
    """The process runs (neither gone nor a zombie)."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return False


def _write_private(path: Path, text: str) -> None:
    """path with text, readable by this user only (0600 from its creation)."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(text)


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _terminate(pid: int, folder: Path, grace: float = 20.0) -> None:
    """Stop the server pid (only if it is ours), politely first."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not _is_ours(pid, folder):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _is_ours(pid, folder):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if this process started it
            time.sleep(0.1)


def _log_cause(log: Path) -> str:
    """The last line of the server's log that names an error, for a failed start."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    named = [line for line in lines if "Exception" in line or "Error" in line or "error" in line]
    return (named or lines or ["an empty log"])[-1][:400]


def _start(folder: Path, master: str, conf: dict[str, str], java_home: str, print_: str) -> dict:
    token, task_key, port = secrets.token_urlsafe(32), new_key(), _free_port()
    settings = {**conf, "spark.connect.grpc.binding.address": "127.0.0.1",
                "spark.connect.grpc.binding.port": str(port),
                # The executors of a cluster get the tasks' key as the server's own executors do (Spark redacts it).
                f"spark.executorEnv.{TASK_KEY_VARIABLE}": task_key}
    properties = folder / "server.properties"  # private: it holds the tasks' key; off the command line (ps)
    _write_private(properties, "".join(f"{key}={str(value).replace(chr(92), chr(92) * 2)}\n"
                                       for key, value in settings.items()))
    # The server outlives the run: none of the run's credentials (they reach the tasks sealed, per job).
    env = {name: value for name, value in os.environ.items() if not (
        name.startswith(("SPARK_REMOTE", "SPARK_CONNECT_MODE", "SPARK_LOCAL_REMOTE", "AWS_", "PG", "DAGSTER_POSTGRES_"))
        or name == "DESAFIO_POSTGRES_URL" or _SECRET_NAME.search(name))}
    env.update({"SPARK_CONNECT_AUTHENTICATE_TOKEN": token, TASK_KEY_VARIABLE: task_key, "JAVA_HOME": java_home,
                "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable})
    spark_home = Path(pyspark.__file__).parent
    log = folder / "server.log"
    command = [sys.executable, "-c", _SIGTERM_AT_DEFAULT,
               str(spark_home / "bin" / "spark-submit"), "--class", SERVER_CLASS, "--name", "desafio_dagster",
               "--master", master, "--properties-file", str(properties), "--load-spark-defaults",
               "--driver-java-options", f"-Ddesafio.connect.state={folder} {conf.get('spark.driver.extraJavaOptions', '')}"]
    with open(log, "w") as out:  # the server outlives this process: its own session, no terminal
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=folder)
    deadline = time.monotonic() + START_TIMEOUT
    while not _listening(port):
        if process.poll() is not None:
            raise ConnectServerError(f"the Spark Connect server for {print_} exited during start-up "
                                     f"(code {process.returncode}): {_log_cause(log)}")
        if time.monotonic() > deadline:
            _terminate(process.pid, folder)
            raise ConnectServerError(f"the Spark Connect server for {print_} did not listen within "
                                     f"{START_TIMEOUT:.0f} s: {_log_cause(log)}")
        time.sleep(0.1)
    return {"pid": process.pid, "port": port, "token": token, "task_key": task_key, "master": master}


def serve(master: str, conf: dict[str, str]) -> NoReturn:
    """Replace this process with a Connect server for master with conf, in the foreground, on every interface
    (conf's spark.connect.grpc.binding.port), and without a token unless SPARK_CONNECT_AUTHENTICATE_TOKEN is set.
    Its Python workers run this interpreter (where the project is installed) unless PYSPARK_PYTHON says otherwise."""
    spark_home = Path(pyspark.__file__).parent
    command = [str(spark_home / "bin" / "spark-submit"), "--class", SERVER_CLASS, "--name", "desafio_dagster",
               "--master", master, *(arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}"))]
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stops on SIGTERM, whatever its launcher ignored (_SIGTERM_AT_DEFAULT)
    os.execve(command[0], command, {"PYSPARK_PYTHON": sys.executable, **os.environ})


def ensure_server(home: Path, master: str, conf: dict[str, str], java_setting: str,
                  find_java: Callable[[], str]) -> ConnectServer:
    """The running server of home if it was started as asked and answers; else a new one (the old one stopped).
    conf: the server's static settings (spark.driver.memory, ...): a change starts a new server. java_setting:
    JAVA_HOME as set (empty: found); find_java() probes the Java to start a server on (a JVM start: only then)."""
    wanted = fingerprint(master, conf, java_setting)
    with _locked(home) as folder:
        state = _load(folder)
        if state and not (state["fingerprint"] == wanted and _is_ours(state["pid"], folder)
                          and _listening(state["port"])):
            _terminate(state["pid"], folder)  # stale (another setting, another code), crashed, or hung
            state = None
        if state is None:
            java = find_java()
            try:
                started = _start(folder, master, conf, java, f"{master} under {home}")
            except ConnectServerError as error:
                if "BindException" not in str(error) and "already in use" not in str(error):
                    raise
                started = _start(folder, master, conf, java, f"{master} under {home}")  # its port was taken meanwhile
            state = {**started, "fingerprint": wanted}
            _write_private(folder / "server.json", json.dumps(state))
        return ConnectServer(url=f"sc://localhost:{state['port']}", token=state["token"], task_key=state["task_key"],
                             pid=state["pid"], master=state["master"], home=Path(home))


def stop_server(home: Path) -> bool:
    """Stop home's server if one runs; True if one did."""
    if not state_dir(home).exists():
        return False
    with _locked(home) as folder:
        state = _load(folder)
        running = state is not None and _is_ours(state["pid"], folder)
        if state:
            _terminate(state["pid"], folder)
        with contextlib.suppress(FileNotFoundError):
            (folder / "server.json").unlink()
        return running


def running_server(home: Path) -> int | None:
    """The pid of home's server if it runs."""
    state = _load(state_dir(home))
    return state["pid"] if state and _is_ours(state["pid"], state_dir(home)) else None
