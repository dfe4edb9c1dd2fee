"""Incremental export benchmark, in one run, on the database desafio_bench (bench_populate.py):

1. a full export publishes the current source (not timed: it only sets the stage);
2. the `grow` job adds one day of activity touching about 1% of the clients;
3. the incremental export of that snapshot (whole `dagster job execute` process, checks included);
4. a full export (full_refresh) of the same snapshot, same measure: the two versions must be
   byte-identical (client files, _index.csv, _snapshot.arrow, _format.json);
5. an export with nothing changed.

    python bench/bench_incremental.py                 # whatever desafio_bench holds (~1M movements)
    python bench/bench_incremental.py --populate 100000   # first populate 100,000 clients (~10M movements)

Each run adds a day to desafio_bench.
"""

import argparse
import contextlib
import filecmp
import os
import sys
import tempfile
from pathlib import Path

import dagster as dg
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from bench_export import movements, populated  # noqa: E402
from measure import last_peaks, mib, run_measured, warm_engine  # noqa: E402

from desafio_dagster.core.output.version import READBACK_FILE  # noqa: E402
from desafio_dagster.core.spark.connect_server import running_server  # noqa: E402

ACTIVE_SHARE, NEW_SHARE = 0.009, 0.001  # of the clients, in the day the growth adds: 1% in all


def job(name: str, env: dict, work: Path, config: dict | None = None) -> tuple[float, int]:
    """(seconds, peak memory): of the job's process tree and of the project's Spark Connect server (under the
    run's DESAFIO_HOME) together, at the same instants (each one's own peak: measure.last_peaks, last_run_peak)."""
    args = [sys.executable, "-m", "dagster", "job", "execute", "-m", "desafio_dagster.definitions", "-j", name]
    if config:
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        args += ["-c", str(path)]
    home = Path(env["DESAFIO_HOME"]) if "DESAFIO_HOME" in env else None
    seconds, peak, _ = run_measured(args, env, engine=(lambda: running_server(home)) if home else None)
    last_run_peak[0] = peak
    return seconds, last_peaks["together"] if home else peak


last_run_peak = [0]  # the last job's own process tree at its peak


def export_metadata(dagster_home: Path) -> dict:
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("movements_csv"))
        return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def same_bytes(left: Path, right: Path) -> bool:
    names = sorted(p.name for p in left.iterdir() if p.name != READBACK_FILE)
    if names != sorted(p.name for p in right.iterdir() if p.name != READBACK_FILE):
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, names, shallow=False)
    return not mismatch and not errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--populate", type=int, metavar="CLIENTS", help="populate this many clients first")
    args = parser.parse_args()
    url = populated(args.populate)
    full_refresh = {"ops": {"movements_csv": {"config": {"full_refresh": True}}}}
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
        work = Path(directory)
        env = {**os.environ, "DESAFIO_POSTGRES_URL": url, "DAGSTER_HOME": str(work),
               "DESAFIO_HOME": str(work / "home"), "DESAFIO_OUTPUT_DIR": str(work / "out")}
        stack.enter_context(warm_engine(work / "home"))  # the runs find the Spark Connect server up
        folder = work / "out" / "movements_csv"
        job("export", env, work, full_refresh)
        rows_before, clients_before = movements(url)
        grow_seconds, _ = job("grow", env, work, {"ops": {"source_database": {"config": {
            "add_days": 1, "active_clients_per_day": ACTIVE_SHARE, "new_clients_per_day": NEW_SHARE}}}})
        rows, clients = movements(url)

        incremental_seconds, incremental_peak = job("export", env, work)
        incremental = export_metadata(work)
        incremental_version = folder.resolve()
        full_seconds, full_peak = job("export", env, work, full_refresh)
        full = export_metadata(work)
        identical = same_bytes(incremental_version, folder.resolve())
        unchanged_seconds, unchanged_peak = job("export", env, work)
        unchanged = export_metadata(work)

    print(f"incremental export benchmark: {rows:,} movements, {clients:,} clients, after a growth of one day "
          f"({grow_seconds:.1f} s, +{rows - rows_before:,} movements, +{clients - clients_before:,} clients)")
    rewritten = incremental["clients_rewritten"]
    print(f"  full export of the grown snapshot (checks included): {full_seconds:7.2f} s, peak {mib(full_peak)}, "
          f"{full['clients_rewritten']:,} files written")
    print(f"  incremental export of it (checks included):          {incremental_seconds:7.2f} s, peak {mib(incremental_peak)}, "
          f"{rewritten:,} files written ({rewritten / clients:.2%} of the clients), "
          f"{incremental['clients_carried']:,} carried, {incremental['clients_removed']:,} removed")
    print(f"  incremental / full:                                  {incremental_seconds / full_seconds:7.1%} (target <= 10%)")
    print(f"  byte-identical to the full export:                   {identical}")
    print(f"  nothing changed (mode {unchanged['export_mode']}):                     {unchanged_seconds:7.2f} s, "
          f"peak {mib(unchanged_peak)}")
    print(f"  nothing changed / full:                              {unchanged_seconds / full_seconds:7.1%} (target <= 5%)")
    figures = {name: m["export_seconds"]["snapshot_figures"] for name, m in
               (("incremental", incremental), ("full", full), ("unchanged", unchanged))}
    print("  finding the changed clients (the snapshot's figures and fingerprints, one query over the whole "
          "source): " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in figures.items()))
    if not identical:
        sys.exit("the incremental export differs from the full export of the same snapshot")


if __name__ == "__main__":
    main()
