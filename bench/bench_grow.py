"""Growth benchmark: loading.grow on a populated source, and the reading of its state.

    python bench/bench_grow.py [--clients 1000] [--max-movements 66] [--days 1] [--repeat 3]

Uses DESAFIO_POSTGRES_URL's server (default postgresql://postgres@127.0.0.1:5432/postgres) and a
database of its own there, dropped at the end. Prints, per growth: its time and the rows it added;
and the state read alone, with the part of it that scans movimento for the source's last day.
"""

import argparse
import os
import sys
import time
import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from desafio_dagster.core.source import loading
from desafio_dagster.core.source.fakedata import GenerationSpec, GrowthSpec, generate
from desafio_dagster.core.source.source_db import SourceDatabase

SERVER = os.environ.get("DESAFIO_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1_000)
    parser.add_argument("--max-movements", type=int, default=66)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    name = f"desafio_bench_grow_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        db = SourceDatabase(make_conninfo(SERVER, dbname=name))
        started = time.monotonic()
        loaded = loading.replace(db, generate(GenerationSpec(clients=args.clients, movements_per_card=(0, args.max_movements))))
        print(f"populate: {sum(loaded.values()):,} rows ({loaded['cartao']:,} cards) in {time.monotonic() - started:.1f} s")
        for attempt in range(args.repeat):
            started = time.monotonic()
            added = loading.grow(db, GrowthSpec(days=args.days, seed=attempt))
            print(f"grow {args.days} day(s), default shares: {time.monotonic() - started:.3f} s, added {added}")
        with db.connect() as conn:
            started = time.monotonic()
            state = loading.growth_state(db, conn)
            whole = time.monotonic() - started
            started = time.monotonic()
            conn.execute("SELECT max(data_movimento) FROM movimento").fetchone()
            scan = time.monotonic() - started
        print(f"state: {whole:.3f} s for {len(state.client_ids):,} clients and {len(state.card_ids):,} cards, "
              f"of which about {scan:.3f} s is the scan of movimento for its latest date")
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
