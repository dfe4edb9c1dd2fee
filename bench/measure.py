"""Run a command and measure its wall time and the peak memory of its whole process tree."""

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil


def tree_rss(pid: int, leave_out: set[int] = frozenset()) -> tuple[int, set[int]]:
    """(resident bytes of pid and its descendants but the subtrees of leave_out, the pids counted)."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, set()
    left_out = set()
    for p in tree:
        if p.pid in leave_out:
            with contextlib.suppress(psutil.Error):
                left_out |= {p.pid, *(c.pid for c in p.children(recursive=True))}
    total, counted = 0, set()
    for p in tree:
        if p.pid not in left_out:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
                counted.add(p.pid)
    return total, counted


def run_measured(cmd: list[str], env: dict | None = None, interval: float = 0.1,
                 engine: Callable[[], int | None] | None = None) -> tuple[float, int, str]:
    """(seconds, peak resident bytes summed over the process and its descendants, output). engine: the pid
    of a long-lived engine the command may start or use (a Spark Connect server): its tree is left out of
    the command's; its own peak, and the peak of both sampled at the same instants, are kept in last_peaks."""
    started = time.monotonic()
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()
    last_peaks.update(engine=0, together=0)

    def sample():
        nonlocal peak
        while not done.is_set():
            server = engine() if engine else None
            own = tree_rss(process.pid, {server} if server else set())[0]
            engine_rss = tree_rss(server)[0] if server else 0
            peak = max(peak, own)
            last_peaks["engine"] = max(last_peaks["engine"], engine_rss)
            last_peaks["together"] = max(last_peaks["together"], own + engine_rss)
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    elapsed = time.monotonic() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({process.returncode}):\n{output[-4000:]}")
    return elapsed, peak, output


@contextlib.contextmanager
def warm_engine(home: Path):
    """The project's Spark Connect server for home (what an export with DESAFIO_HOME=home uses), started
    before the runs measured, which find it warm, and stopped after them."""
    from desafio_dagster.core.spark.connect_server import stop_server
    from desafio_dagster.core.spark.spark_session import project_server

    try:
        project_server(home=home)
        yield
    finally:
        stop_server(home)


# Of the last run_measured with an engine: the engine's peak, and the peak of the run's tree and the engine
# together (sampled at the same instants: the two peak at different times, so this is less than their sum).
last_peaks = {"engine": 0, "together": 0}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server the bench starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"
