"""What a client file costs this disk without the export: the local tasks' pattern (task_output._LocalAttempt)
in plain Python. Two processes (the two task slots) each create files of 1,500 bytes (10 movements) in an
attempt folder of their own, write and fstat each, then rename each into one version folder, link it into a
twin folder, and make them durable with one syncfs, 20,000 files an attempt. Prints the summed µs per file of
each phase and the wall time per file, then removes the files (timed too).

    python bench/bench_files.py                          # 1,000,000 files under a temporary folder
    python bench/bench_files.py --files 100000 --dir /some/disk

On an ext4 without a journal, a file created within minutes of a mass removal costs much more (the kernel
scans past the recently freed inodes: ext4's recently_deleted()); run it on a quiet filesystem.
"""

import argparse
import ctypes
import os
import shutil
import tempfile
import time
from multiprocessing import Process, Queue

PAYLOAD = b"x" * 1500
ATTEMPT_FILES = 20_000


def task(root: str, first: int, last: int, results: Queue) -> None:
    syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    version, twin = os.path.join(root, "version"), os.path.join(root, "twin")
    seconds = {"write": 0.0, "rename and link": 0.0, "syncfs": 0.0}
    for start in range(first, last, ATTEMPT_FILES):
        attempt = os.path.join(version, ".attempts", f"{start:08d}")
        os.mkdir(attempt)
        names = [f"{client:08d}_maria-da-silva-souza.csv" for client in range(start, min(start + ATTEMPT_FILES, last))]
        began = time.perf_counter()
        for name in names:
            with open(os.path.join(attempt, name), "wb", buffering=0) as out:
                out.write(PAYLOAD)
                os.fstat(out.fileno())
        written = time.perf_counter()
        for name in names:
            os.rename(os.path.join(attempt, name), os.path.join(version, name))
            os.link(os.path.join(version, name), os.path.join(twin, name))
        os.rmdir(attempt)
        moved = time.perf_counter()
        folder = os.open(version, os.O_RDONLY)
        try:
            syncfs(folder)
        finally:
            os.close(folder)
        seconds["write"] += written - began
        seconds["rename and link"] += moved - written
        seconds["syncfs"] += time.perf_counter() - moved
    results.put(seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None, help="where to make the files (default: the temporary folder)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(dir=args.dir)
    try:
        os.makedirs(os.path.join(root, "version", ".attempts"))
        os.mkdir(os.path.join(root, "twin"))
        results: Queue = Queue()
        half = args.files // 2
        began = time.perf_counter()
        workers = [Process(target=task, args=(root, first, first + half, results)) for first in (0, half)]
        for worker in workers:
            worker.start()
        summed = [results.get() for _ in workers]
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - began
        files = 2 * half
        print(f"{files:,} files of {len(PAYLOAD):,} bytes, two processes: {wall:.1f} s, {wall / files * 1e6:.0f} µs a "
              f"file wall; summed over both, µs a file: " + ", ".join(
                  f"{phase} {sum(s[phase] for s in summed) / files * 1e6:.0f}" for phase in summed[0]))
    finally:
        began = time.perf_counter()
        shutil.rmtree(root)
        seconds = time.perf_counter() - began
        print(f"removed in {seconds:.1f} s ({seconds / max(args.files, 1) * 1e6:.0f} µs a file, both links)")


if __name__ == "__main__":
    main()
