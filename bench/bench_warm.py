"""The warm engine: what a run pays for Spark when the project's Spark Connect server is already up, and
the memory of the run and of the engine, idle and at peak, in one run.

    python bench/bench_warm.py                       # ~1M movements (10,000 clients), against DuckDB
    python bench/bench_warm.py --populate 100000 --no-duckdb   # ~10M movements

1. A fresh Python process opens a session and runs a trivial job (one Python task per core that
   imports the project's modules): cold (the server starts), then warm, three times.
2. The export job (`dagster job execute`, whole process with its checks, full_refresh) on a cold
   server, then --repeat times warm; the DuckDB script of the same extract, join and files.
Uses the database desafio_bench (bench_populate.py), populating it if empty.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).parent))
from bench_export import movements, populated  # noqa: E402
from measure import last_peaks, mib, run_measured, tree_rss  # noqa: E402

from desafio_dagster.core.spark.connect_server import running_server, stop_server  # noqa: E402

PROBE = """
import json, os, sys, time
started = time.monotonic()
from desafio_dagster.core.spark.spark_session import connect, task_slots
import pyarrow as pa
imported = time.monotonic()
def task(batches):
    import desafio_dagster.core.export.publish  # what an export's task imports
    for batch in batches:
        yield pa.RecordBatch.from_pylist([{"rows": batch.num_rows}])
connected = connect()
slots = task_slots(connected.session)
session = time.monotonic()
connected.session.range(0, 1000, 1, slots).mapInArrow(task, "rows long").toArrow()
job = time.monotonic()
connected.close()
print(json.dumps({"imports": imported - started, "session": session - imported, "job": job - session}))
"""


def export_seconds(dagster_home: str) -> dict[str, float]:
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("movements_csv"))
        return event.asset_materialization.metadata["export_seconds"].value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--populate", type=int, metavar="CLIENTS", help="populate this many clients first")
    parser.add_argument("--repeat", type=int, default=3, help="warm runs of each; the median is reported")
    parser.add_argument("--no-duckdb", action="store_true", help="the export alone")
    args = parser.parse_args()
    url = populated(args.populate)
    rows, clients = movements(url)

    with tempfile.TemporaryDirectory() as work:
        home = Path(work, "home")
        env = {name: value for name, value in os.environ.items()
               if name not in ("DESAFIO_SPARK_MASTER", "SPARK_CONNECT_AUTHENTICATE_TOKEN", "DESAFIO_TASK_SECRET")}
        env.update({"DESAFIO_POSTGRES_URL": url, "DAGSTER_HOME": work, "DESAFIO_HOME": str(home),
                    "DESAFIO_OUTPUT_DIR": f"{work}/spark-out"})
        Path(work, "full.yaml").write_text("ops: {movements_csv: {config: {full_refresh: true}}}\n")
        try:
            probes = []
            for _ in range(1 + args.repeat):
                out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
                probes.append(json.loads(out.stdout.strip().splitlines()[-1]))
            idle_before = tree_rss(running_server(home))[0]
            stop_server(home)

            runs = []
            for _ in range(1 + args.repeat):
                seconds, peak, _ = run_measured(
                    [sys.executable, "-m", "dagster", "job", "execute", "-m", "desafio_dagster.definitions", "-j",
                     "export", "-c", f"{work}/full.yaml"], env, engine=lambda: running_server(home))
                phases = export_seconds(work)
                runs.append((seconds, peak, last_peaks["engine"], phases))
            after = tree_rss(running_server(home))[0]
            time.sleep(75)  # the server's JVM gives unused heap back after a minute idle
            idle = tree_rss(running_server(home))[0]
        finally:
            stop_server(home)
        ducks = []
        if not args.no_duckdb:
            for _ in range(args.repeat):
                seconds, peak, _ = run_measured([sys.executable, str(Path(__file__).parent / "duckdb_export.py"),
                                                 f"{work}/duckdb-out"], env)
                ducks.append((seconds, peak))

    print(f"warm engine benchmark: {rows:,} movements, {clients:,} clients; warm figures: median of {args.repeat}")
    cold, warm = probes[0], sorted(probes[1:], key=lambda p: p["session"] + p["job"])[len(probes[1:]) // 2]
    print(f"  a fresh process, session and a trivial job: cold {cold['session']:.2f} s + {cold['job']:.2f} s "
          f"(the server starts), warm {warm['session']:.2f} s + {warm['job']:.2f} s = "
          f"{warm['session'] + warm['job']:.2f} s (target <= 1 s); imports {warm['imports']:.2f} s")
    first, rest = runs[0], sorted(runs[1:])[len(runs[1:]) // 2]
    for name, (seconds, peak, engine, phases) in (("cold", first), ("warm", rest)):
        print(f"  export, {name} engine (full_refresh, whole process, checks included): {seconds:6.2f} s; "
              f"run's process tree {mib(peak)}, engine peak {mib(engine)}, together {mib(peak + engine)}; "
              f"spark_start {phases.get('spark_start', 0):.2f} s, spark_job {phases.get('spark_job', 0):.2f} s")
    print(f"  engine idle: {mib(idle_before)} after the probes; after the exports {mib(after)}, "
          f"then {mib(idle)} after 75 s idle")
    if ducks:
        duck_seconds, duck_peak = sorted(ducks)[len(ducks) // 2]
        print(f"  DuckDB extract -> join -> one CSV per client: {duck_seconds:6.2f} s, peak {mib(duck_peak)}")
        print(f"  ratio warm export / DuckDB: {rest[0] / duck_seconds:.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()
