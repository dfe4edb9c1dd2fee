"""`python -m desafio_dagster.cli run | stop | stop-db`: what `make run`, `make stop` and `make stop-db` call
(`run --job grow [--days N]` adds days of activity to the source instead of replacing it).

`run` executes a job in this process with the DagsterInstance under DAGSTER_HOME (so the UI
shows the run). The terminal gets one line per step and a summary; everything else written to
stdout and stderr (Dagster's full event log at DEBUG, the JVM's and Spark's output) goes to
$DESAFIO_HOME/logs/<run id>.log.
"""

import argparse
import contextlib
import os
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import dagster as dg

from desafio_dagster.cli.run_report import RunReport, Screen, seconds
from desafio_dagster.core import settings
from desafio_dagster.core.source.embedded import stop_embedded
from desafio_dagster.core.source.source_db import describe
from desafio_dagster.defs import metadata as meta

UI_URL = "http://127.0.0.1:3000"


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[TextIO]:
    """Point file descriptors 1 and 2 at `log` (child processes such as the JVM inherit them);
    yield a stream to the original stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = open(os.dup(saved[0]), "w", encoding=sys.stdout.encoding, errors="replace", buffering=1)
    with open(log, "ab") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        terminal.close()
        for fd, original in zip((1, 2), saved):
            os.dup2(original, fd)
            os.close(original)


def _postgres_location(config: settings.Settings) -> str:
    if config.postgres_url:
        return describe(config.postgres_url)
    return f"embedded, in {config.pgdata} (`make stop` stops it)"


def _summary(report: RunReport, config: settings.Settings, job_name: str, elapsed: float, log: Path) -> list[str]:
    from desafio_dagster.core.output.version import INDEX_FILE
    from desafio_dagster.defs.assets.source import RAW_TABLES

    lines = ["", f"{job_name} succeeded in {seconds(elapsed)}."]
    growth = report.metadata("raw_clients").get("growth")
    if growth:
        added = sum(report.metadata(asset).get(meta.ROWS_ADDED, 0) for asset in RAW_TABLES)
        span = growth["first_day"] if growth["first_day"] == growth["last_day"] else f"{growth['first_day']} to {growth['last_day']}"
        lines.append(f"  Growth    {growth['add_days']} day(s), {span}: {added:,} rows added")
    export = report.metadata("movements_csv")
    # Rows the run loaded, else (export alone) the rows of the snapshot it exported.
    table_rows = {table: report.metadata(asset).get(meta.ROW_COUNT, export.get(meta.SOURCE_ROWS.format(table=table)))
                  for asset, table in RAW_TABLES.items()}
    if any(rows is not None for rows in table_rows.values()):
        lines.append(f"  Postgres  {_postgres_location(config)}")
        added = {table: report.metadata(asset).get(meta.ROWS_ADDED) for asset, table in RAW_TABLES.items()}
        lines += [f"              {config.schema}.{table:<10} {rows:>12,} rows"
                  + (f" (+{added[table]:,})" if growth and added[table] is not None else "")
                  for table, rows in table_rows.items() if rows is not None]
    if export:
        where = str(export.get(meta.PATH) or config.output_dir / "movements_csv")
        lines.append(f"  CSV       {export[meta.CLIENTS]:,} clients, one file each, and {INDEX_FILE}"
                     f" ({export[meta.ROW_COUNT]:,} rows), in")
        if where.startswith("s3://"):  # no folder to open: the version, and how a reader finds it
            lines.append(f"              {export.get(meta.VERSION, where)}")
            lines.append(f"  Read      the version named in {where}/_published (read it once), then its files: "
                         f"README, \"Reading the output from S3\"")
        else:
            lines.append(f"              {Path(where)}")
        lines.append(f"  Export    {_export_line(export)}")
        if export.get(meta.SPARK_ENGINE):
            lines.append(f"  Spark     {export[meta.SPARK_ENGINE]}"
                         + (" (`make stop` stops it)" if "the project's server" in export[meta.SPARK_ENGINE] else ""))
    lines.append(f"  Log       {log}")
    lines.append(f"  UI        `make ui`, then open {UI_URL} (runs, assets, checks)")
    return lines


def _export_line(export: dict) -> str:
    """What the export wrote, carried and removed (see core/export/incremental.py)."""
    mode = export.get(meta.EXPORT_MODE)
    if mode == "unchanged":
        return "nothing changed since the last export: the published version stays, Spark did not start"
    figures = (f"{export.get(meta.CLIENTS_REWRITTEN, 0):,} files written, {export.get(meta.CLIENTS_CARRIED, 0):,} carried, "
               f"{export.get(meta.CLIENTS_REMOVED, 0):,} removed")
    return f"{mode} ({export.get(meta.EXPORT_REASON)}): {figures}" if mode == "full" else f"{mode}: {figures}"


def run(job_name: str, clients: int | None = None, days: int | None = None, full_refresh: bool = False) -> int:
    from desafio_dagster.definitions import defs  # imports Spark: not needed by stop-db
    from desafio_dagster.defs.assets.source import SourceDatabaseConfig

    config = settings.read()
    try:
        settings.output_location()  # before anything is written: not a folder named "s3:" or "gs:"
    except settings.SettingError as error:
        print(f"{job_name} did not start: {error}", file=sys.stderr)
        return 2
    if not os.environ.get("DAGSTER_HOME", "").strip():  # as under make: runs are kept for the UI
        os.environ["DAGSTER_HOME"] = str(config.home / "dagster")
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    job = defs.resolve_job_def(job_name)
    run_id = str(uuid.uuid4())
    log = config.home / "logs" / f"{run_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)

    populates = job_name in ("etl", "populate")
    generation: dict[str, int] = {"clients": clients} if clients else {}
    if job_name == "grow":
        generation = {"add_days": days or 1}
    run_config = {"ops": {"source_database": {"config": generation}}} if generation else {}
    if full_refresh:
        run_config.setdefault("ops", {})["movements_csv"] = {"config": {"full_refresh": True}}
    chosen = SourceDatabaseConfig.model_validate(generation)
    spec = chosen.to_spec() if populates else None
    growth = chosen.to_growth() if job_name == "grow" else None
    if growth is not None:
        intro = (f"grow: {growth.days} day(s) of activity after the source's last day (seed {growth.seed}; each day "
                 f"{growth.active_clients:.2%} of the clients active, {growth.new_clients:.2%} new) into Postgres")
    elif spec:
        intro = f"{job_name}: {spec.clients:,} clients (seed {spec.seed}) into Postgres" + (
            ", then one CSV per client with Spark" if job_name == "etl" else "")
    else:
        intro = f"{job_name}: one CSV per client with Spark (those that changed since the last export), from what Postgres holds now"
    print(f"{intro}\nfull log: {log}", flush=True)

    started, result, crash = time.monotonic(), None, None
    with output_to(log) as terminal:
        screen = Screen(terminal)
        with RunReport(screen, spec.expected_rows if spec else None) as report:
            try:
                with dg.DagsterInstance.get() as instance:
                    instance.add_event_listener(run_id, report)
                    result = job.execute_in_process(
                        run_config=run_config, instance=instance, run_id=run_id, raise_on_error=False
                    )
            except KeyboardInterrupt:
                crash = "interrupted"
            except Exception as error:  # e.g. invalid config: Dagster raises before the run starts
                traceback.print_exc()  # into the log
                crash = f"{type(error).__name__}: {error}"
        if result is not None and result.success:
            for line in _summary(report, config, job_name, time.monotonic() - started, log):
                screen.line(line)
            return 0
        report.not_run(node.name for node in job.nodes_in_topological_order)
    reason = crash or report.failure()
    print(f"\n{job_name} failed after {seconds(time.monotonic() - started)} (run {run_id}):\n  {reason}\n"
          f"The full log (Dagster's events, tracebacks, Spark's output): {log}", file=sys.stderr)
    return 130 if crash == "interrupted" else 1


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m desafio_dagster.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run a job with the default config and report where the output is")
    run_parser.add_argument("--job", default="etl", choices=["etl", "populate", "grow", "export"])
    run_parser.add_argument("--clients", type=_positive, help="clients to generate (default: the run config's default)")
    run_parser.add_argument("--days", type=_positive,
                            help="with --job grow: days of activity to add after the source's last day (default 1)")
    run_parser.add_argument("--full-refresh", action="store_true",
                            help="rewrite every client file (by default the export rewrites only what changed)")
    serve = commands.add_parser("spark-connect", help="run a Spark Connect server for a cluster in the foreground, "
                                "on every interface, without a token (a deployment's service: the compose stack's)")
    serve.add_argument("--master", required=True, help="spark://host:7077 (or local[*])")
    serve.add_argument("--port", type=_positive, default=15002)
    commands.add_parser("stop-db", help="stop the embedded Postgres under DESAFIO_HOME")
    commands.add_parser("stop", help="stop what runs under DESAFIO_HOME between runs: the embedded Postgres and "
                                     "the project's Spark Connect server")
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.clients and args.job not in ("etl", "populate"):
            parser.error(f"--clients sets the generation: it applies to the etl and populate jobs, not {args.job}")
        if args.days and args.job != "grow":
            parser.error("--days sets the days a growth adds: it applies to the grow job only (--job grow)")
        if args.full_refresh and args.job not in ("etl", "export"):
            parser.error("--full-refresh applies to the export: use it with --job etl or --job export")
        return run(args.job, args.clients, args.days, args.full_refresh)
    if args.command == "spark-connect":
        from desafio_dagster.core.spark.spark_session import SparkStartError
        from desafio_dagster.core.spark.spark_session import serve as serve_spark_connect

        try:
            serve_spark_connect(args.master, args.port)  # does not return
        except SparkStartError as error:
            parser.error(str(error))
    home = settings.read().home
    stopped = stop_embedded(home)
    print("embedded Postgres stopped" if stopped else "embedded Postgres was not running")
    if args.command == "stop":
        from desafio_dagster.core.spark.connect_server import stop_server

        print("Spark Connect server stopped" if stop_server(home) else "Spark Connect server was not running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
