"""Run a command and measure its wall time and the peak memory of its whole process tree."""

import subprocess
import threading
import time

import psutil


def run_measured(cmd: list[str], env: dict | None = None, interval: float = 0.1) -> tuple[float, int, str]:
    """(seconds, peak resident bytes summed over the process and its descendants, output)."""
    started = time.monotonic()
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                total = 0
                for p in tree:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, total)
            except psutil.Error:
                pass
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


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"
