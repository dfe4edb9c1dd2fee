"""`python -m desafio_dagster.cli run | stop-db`: what `make run` and `make stop-db` call."""

import argparse
import os
import sys

import dagster as dg

from desafio_dagster import settings
from desafio_dagster.source_db import stop_embedded


def run(job_name: str) -> int:
    from desafio_dagster.definitions import defs  # imports Spark: not needed by stop-db
    from desafio_dagster.publish import INDEX_FILE

    if not os.environ.get("DAGSTER_HOME"):  # as under make: runs are kept for the UI
        os.environ["DAGSTER_HOME"] = str((settings.home() / "dagster").absolute())
        os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, raise_on_error=False)
    if not result.success:
        print(f"\nThe {job_name} run failed; the messages above say why (run id {result.run_id}).", file=sys.stderr)
        return 1
    print(f"\n{job_name} succeeded (run id {result.run_id}).")
    folder = settings.output_dir() / "movements_csv"
    if job_name != "populate" and folder.exists():
        files = sum(1 for p in folder.iterdir() if p.name != INDEX_FILE)
        print(f"{files:,} client CSV files in {folder.absolute()} (index: {folder.absolute() / INDEX_FILE})")
    print("Open the UI with `make ui` (dagster dev) to see the run, the assets and their checks.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m desafio_dagster.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run a job with the default config and report where the output is")
    run_parser.add_argument("--job", default="etl", choices=["etl", "populate", "export"])
    commands.add_parser("stop-db", help="stop the embedded Postgres under DESAFIO_HOME")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.job)
    stopped = stop_embedded(settings.home())
    print("embedded Postgres stopped" if stopped else "embedded Postgres was not running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
