"""Populate benchmark: the `populate` job (whole `dagster job execute` process) against a
plain COPY of the same rows into the same DDL, measured in one run.

    python bench/bench_populate.py [--clients 10000] [--max-movements 66]

Uses DESAFIO_POSTGRES_URL's server (default postgresql://postgres@127.0.0.1:5432/postgres)
and creates the database desafio_bench there (kept for bench_export.py).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).parent))
from measure import mib, run_measured  # noqa: E402

from desafio_dagster.core.source.fakedata import TABLES, GenerationSpec, generate, to_copy_csv  # noqa: E402
from desafio_dagster.core.source.source_db import SCHEMA_SQL  # noqa: E402

SERVER = os.environ.get("DESAFIO_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BENCH_DB = "desafio_bench"


def bench_url(name: str = BENCH_DB) -> str:
    """The benchmark database name on the server, created if missing."""
    with psycopg.connect(SERVER, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(SERVER, dbname=name)


def populate_job(url: str, config: dict) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as home:
        cfg = Path(home) / "cfg.yaml"
        cfg.write_text(yaml.safe_dump({"ops": {"source_database": {"config": config}}}))
        env = {**os.environ, "DESAFIO_POSTGRES_URL": url, "DAGSTER_HOME": home}
        seconds, peak, _ = run_measured(
            [sys.executable, "-m", "dagster", "job", "execute", "-m", "desafio_dagster.definitions", "-j", "populate", "-c", str(cfg)], env
        )
    return seconds, peak


def plain_copy(url: str) -> tuple[float, int]:
    """Reload the rows the job wrote into a fresh schema with the same DDL, with plain COPY."""
    with psycopg.connect(url) as conn:
        data = {}
        for table in TABLES:
            buffer = bytearray()
            with conn.cursor().copy(sql.SQL("COPY sicooperative.{} TO STDOUT (FORMAT csv)").format(sql.Identifier(table))) as copy:
                for chunk in copy:
                    buffer += chunk
            data[table] = bytes(buffer)
        conn.execute("DROP SCHEMA IF EXISTS bench_baseline CASCADE")
        conn.execute("CREATE SCHEMA bench_baseline")
        conn.execute("SET search_path TO bench_baseline")
        conn.execute(SCHEMA_SQL)
        conn.commit()
        started = time.monotonic()
        with conn.cursor() as cur:
            for table in TABLES:
                with cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(sql.Identifier(table))) as copy:
                    copy.write(data[table])
        conn.commit()
        seconds = time.monotonic() - started
        rows = sum(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0] for t in TABLES)
        conn.execute("DROP SCHEMA bench_baseline CASCADE")
    return seconds, rows


def generation_only(spec: GenerationSpec) -> tuple[float, int]:
    started, rows = time.monotonic(), 0
    for chunk in generate(spec):
        for table in chunk.tables().values():
            to_copy_csv(table)
            rows += table.num_rows
    return time.monotonic() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--max-movements", type=int, default=66)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    config = {"clients": args.clients, "movements_per_card": [0, args.max_movements], "seed": args.seed}
    url = bench_url()

    job_seconds, job_peak = populate_job(url, config)
    copy_seconds, rows = plain_copy(url)
    gen_seconds, gen_rows = generation_only(GenerationSpec(**config))
    print(f"populate benchmark: {args.clients:,} clients, movements_per_card [0, {args.max_movements}], {rows:,} rows in 4 tables")
    print(f"  populate job (dagster job execute, whole process): {job_seconds:6.2f} s, peak memory {mib(job_peak)}")
    print(f"  plain COPY of the same rows into the same DDL:     {copy_seconds:6.2f} s")
    print(f"  ratio job / plain COPY:                            {job_seconds / copy_seconds:6.2f} (target <= 2)")
    print(f"  generation alone (rows + COPY text):               {gen_seconds:6.2f} s, {gen_rows / gen_seconds:,.0f} rows/s")


if __name__ == "__main__":
    main()
