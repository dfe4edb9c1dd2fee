"""Scale benchmark: the same movements over 100,000 and over 1,000,000 clients, in one run. For each size,
on a database of its own (populated on first use, kept for the next run):

1. a full export (full_refresh) into an empty output;
2. the `grow` job adds one day touching about 1% of the clients;
3. the incremental export of that change (the first after a full export: every carried file is linked into a
   new folder);
4. another day grown, and its incremental export (as every day from then on: the version before the published
   one is recycled, and only what changed over the last two exports is removed or linked);
5. an export with nothing changed.

Each is a whole `dagster job execute -j export` process, checks included, with its wall time and the peak
memory of its process tree and of the Spark Connect server it uses (the JVM and its Python workers): together, sampled
at the same instants, and each at its own peak; beside it, the run's own time from its start to its end as Dagster
records them (what the UI shows: without the process's Python start, imports and instance, about 2.5 s here).
Then the ratios between the two sizes and the cost per client and per movement.

    python bench/bench_scale.py                       # both sizes (about 20 minutes here, populates included)
    python bench/bench_scale.py --sizes 100000        # one size

Each run adds two days to the databases (desafio_bench_100k, desafio_bench_1m).
"""

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).parent))
from bench_export import movements  # noqa: E402
from bench_incremental import ACTIVE_SHARE, NEW_SHARE, export_metadata, job, last_run_peak  # noqa: E402
from bench_populate import bench_url, populate_job  # noqa: E402
from measure import last_peaks, mib, warm_engine  # noqa: E402

# About 10.5M movements at either size: ten times the clients, a tenth of the movements per card.
SIZES = {100_000: ("desafio_bench_100k", [0, 66]), 1_000_000: ("desafio_bench_1m", [0, 7])}
FULL_REFRESH = {"ops": {"movements_csv": {"config": {"full_refresh": True}}}}
KINDS = ("full", "incremental", "recycled", "unchanged")


def step_seconds(dagster_home: Path) -> dict[str, float]:
    """Each step's wall time in the latest run, and the run's own ("run": from its start to its end as Dagster
    records them, what the UI shows; the process's Python, imports and instance come before and after it)."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [run] = instance.get_runs(limit=1)
        record = instance.get_run_record_by_id(run.run_id)
        assert record and record.start_time and record.end_time, "the run has no start or end time"
        return {"run": record.end_time - record.start_time,
                **{s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(run.run_id)}}


def export(env: dict, work: Path, config: dict | None = None) -> tuple[float, int, dict]:
    """(seconds, peak, what the run recorded: the materialization's metadata and its steps' times)."""
    seconds, peak = job("export", env, work, config)
    return seconds, peak, {**export_metadata(work), "steps": step_seconds(work), "run_peak": last_run_peak[0],
                          "engine_peak": last_peaks["engine"]}


def measure(clients: int, kept: contextlib.ExitStack) -> dict:
    """The exports at one size. Its output stays in place until kept closes, after every size is measured: on
    an ext4 without a journal (this machine's), a file created within minutes of a mass removal costs the
    kernel a scan past every recently freed inode (ext4's recently_deleted(), seen with perf), which would
    charge one size's clean-up to the next size's full export."""
    name, per_card = SIZES[clients]
    url = bench_url(name)
    if movements(url)[1] < clients:
        seconds, _ = populate_job(url, {"clients": clients, "movements_per_card": per_card, "seed": 11})
        print(f"populated {name} in {seconds:.1f} s", flush=True)
    work = Path(kept.enter_context(tempfile.TemporaryDirectory(dir=os.environ.get("DESAFIO_BENCH_TMP"))))
    env = {**os.environ, "DESAFIO_POSTGRES_URL": url, "DAGSTER_HOME": str(work),
           "DESAFIO_HOME": str(work / "home"), "DESAFIO_OUTPUT_DIR": str(work / "out")}
    with warm_engine(work / "home"):  # the runs find the Spark Connect server up
        rows, total_clients = movements(url)
        result = {"clients": total_clients, "movements": rows}
        result["full"] = export(env, work, FULL_REFRESH)
        for kind in ("incremental", "recycled"):
            job("grow", env, work, {"ops": {"source_database": {"config": {
                "add_days": 1, "active_clients_per_day": ACTIVE_SHARE, "new_clients_per_day": NEW_SHARE}}}})
            result[kind] = export(env, work)
        result["unchanged"] = export(env, work)
    return result


def report(result: dict) -> None:
    full_seconds, clients = result["full"][0], result["clients"]
    full_run = result["full"][2]["steps"]["run"]
    print(f"{clients:,} clients, {result['movements']:,} movements (before the day added)")
    for kind in KINDS:
        seconds, peak, metadata = result[kind]
        steps = metadata["steps"]
        print(f"  {kind:<12} {seconds:7.1f} s ({seconds / full_seconds:6.1%} of full), peak of run + engine at one instant "
              f"{mib(peak):>10} (each at its own peak: run {mib(metadata['run_peak'])}, engine {mib(metadata['engine_peak'])}), "
              f"{metadata['clients_rewritten']:>9,} files written, {metadata['clients_carried']:>9,} carried; "
              f"steps: export {steps.get('movements_csv', 0):.1f} s, checks {steps.get('movements_csv_checks', 0):.1f} s; "
              f"the run as Dagster records it {steps['run']:.1f} s ({steps['run'] / full_run:.1%} of full's)")
        phases = {**metadata["export_seconds"], "checks": steps.get("movements_csv_checks", 0.0)}
        print("      µs per client: " + ", ".join(f"{phase} {seconds / clients * 1e6:,.1f}"
                                                 for phase, seconds in phases.items()))
    print(f"  full export per client: {full_seconds / clients * 1e6:,.0f} µs, "
          f"per movement: {full_seconds / result['movements'] * 1e6:.2f} µs")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    with contextlib.ExitStack() as kept:  # the outputs, removed once the figures are printed
        results = {clients: measure(clients, kept) for clients in args.sizes}
        print("scale benchmark: the export at the same movements over more clients (default settings)")
        for result in results.values():
            report(result)
        if len(results) == 2:
            small, large = (results[c] for c in sorted(results))
            for kind in KINDS:
                print(f"  {kind}: 1M / 100k clients = {large[kind][0] / small[kind][0]:.2f}x the time, "
                      f"{large[kind][1] / small[kind][1]:.2f}x the peak memory")
            print("  targets: full at 1M <= 2x full at 100k and <= 4 GiB; incremental <= 10% of full; unchanged <= 5%")
        print("removing the outputs", flush=True)


if __name__ == "__main__":
    main()
