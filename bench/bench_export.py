"""Export benchmark: the `export` job (whole `dagster job execute` process) against a
DuckDB implementation of the same extract -> join -> one CSV per client, in one run.

    python bench/bench_export.py                 # the populate benchmark's ~1M movements
    python bench/bench_export.py --populate 100000   # first populate 100,000 clients (~10M movements)

Uses the database desafio_bench made by bench_populate.py (populating it if empty).
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import dagster as dg
import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from bench_populate import bench_url, populate_job  # noqa: E402
from measure import mib, run_measured, warm_engine  # noqa: E402


def movements(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        try:
            return conn.execute("SELECT (SELECT count(*) FROM sicooperative.movimento), "
                                "(SELECT count(*) FROM sicooperative.associado)").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0, 0


def populated(clients: int | None) -> str:
    """The URL of desafio_bench, populated with `clients` clients first if given, or if it is empty
    (10,000 clients, ~1M movements)."""
    url = bench_url()
    if clients or movements(url)[0] == 0:
        seconds, peak = populate_job(url, {"clients": clients or 10_000, "movements_per_card": [0, 66], "seed": 11})
        print(f"populated in {seconds:.1f} s (peak {mib(peak)})")
    return url


# The export's phases that make up its audit: the snapshot's figures, the tasks' read-back (summed over
# tasks), and the driver's listing and comparison.
AUDIT_PHASES = ("snapshot_figures", "tasks_scan", "listing", "audit")


def audit_seconds(dagster_home: str) -> dict[str, float]:
    """The audit's cost, as the run recorded it with the materialization (export_seconds)."""
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("movements_csv"))
        seconds = event.asset_materialization.metadata["export_seconds"].value
        return {phase: seconds.get(phase, 0.0) for phase in AUDIT_PHASES}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--populate", type=int, metavar="CLIENTS", help="populate this many clients first")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; the median is reported")
    parser.add_argument("--no-duckdb", action="store_true",
                        help="the export alone (at 10M movements the DuckDB script took 1,071 s and 11.2 GiB here)")
    args = parser.parse_args()
    url = populated(args.populate)
    rows, clients = movements(url)

    jobs, ducks, audits = [], [], []
    with tempfile.TemporaryDirectory() as engine_home, warm_engine(Path(engine_home)):
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as work:
                env = {**os.environ, "DESAFIO_POSTGRES_URL": url, "DAGSTER_HOME": work,
                       "DESAFIO_HOME": engine_home, "DESAFIO_OUTPUT_DIR": f"{work}/spark-out"}
                seconds, peak, _ = run_measured(
                    [sys.executable, "-m", "dagster", "job", "execute", "-m", "desafio_dagster.definitions", "-j",
                     "export"], env)
                jobs.append((seconds, peak))
                audits.append(audit_seconds(work))
                files = sum(1 for p in Path(work, "spark-out", "movements_csv").glob("*.csv")
                            if not p.name.startswith("_"))
                if not args.no_duckdb:
                    seconds, peak, _ = run_measured(
                        [sys.executable, str(Path(__file__).parent / "duckdb_export.py"), f"{work}/duckdb-out"], env
                    )
                    ducks.append((seconds, peak))
                    duck_files = len(list(Path(work, "duckdb-out").rglob("*.csv")))
    job_seconds, job_peak = sorted(jobs)[len(jobs) // 2]
    print(f"export benchmark: {rows:,} movements, {clients:,} clients, median of {args.repeat} runs of each")
    print(f"  export job (dagster job execute, whole process, checks included): {job_seconds:6.2f} s, "
          f"peak memory {mib(job_peak)} (the run's process tree; the Spark Connect server, started before the "
          f"runs, is not in it: see bench_warm.py), {files:,} client files")
    if ducks:
        duck_seconds, duck_peak = sorted(ducks)[len(ducks) // 2]
        print(f"  DuckDB extract -> join -> one CSV per client:                     {duck_seconds:6.2f} s, "
              f"peak memory {mib(duck_peak)}, {duck_files:,} client files (clients with movements)")
        print(f"  ratio export job / DuckDB:                                         {job_seconds / duck_seconds:6.2f} "
              f"(target <= 1.0)")
    audit = {part: sorted(a[part] for a in audits)[len(audits) // 2] for part in audits[0]}
    spent = sum(audit.values())
    print("  audit before publication (median of each part): "
          + ", ".join(f"{part} {seconds:.2f} s" for part, seconds in audit.items()))
    print(f"  audit / export job:                                                {spent / job_seconds:6.1%} (target <= 10%; "
          f"the tasks' read-back is summed over tasks that run in parallel, so this is an upper bound)")


if __name__ == "__main__":
    main()
