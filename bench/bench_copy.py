"""COPY benchmark: how fast a Spark task turns a `COPY ... TO STDOUT (FORMAT csv)` of movimento into Arrow, in one
run, three ways over the same rows:

- psql to /dev/null: what the server and the network cost alone (the floor);
- psycopg's Copy, one row per iteration, into Arrow's CSV reader (how the export read before);
- the export's reader (extract._copied_batches: the rows libpq holds, copied in one loop).

    python bench/bench_copy.py                 # the 100k-client database of bench_scale.py, 1M rows
    python bench/bench_copy.py --cards 300000  # more rows: every movement of the first 300,000 cards
"""

import argparse
import io
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

sys.path.insert(0, str(Path(__file__).parent))
from bench_populate import bench_url  # noqa: E402

from desafio_dagster.core.export.extract import _BLOCK_BYTES, SOURCE_SCHEMAS, _copied_batches  # noqa: E402
from desafio_dagster.core.source.source_db import identifiers  # noqa: E402

SCHEMA = SOURCE_SCHEMAS["movimento"]


class _RowPerIteration(io.RawIOBase):
    """psycopg's Copy as a file, one row per iteration (what the export did before)."""

    def __init__(self, copy: psycopg.Copy) -> None:
        self._rows, self._pending = iter(copy), memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            if (row := next(self._rows, None)) is None:
                return 0
            self._pending = memoryview(row)
        n = min(len(buffer), len(self._pending))
        buffer[:n], self._pending = self._pending[:n], self._pending[n:]
        return n


def _arrow(stream) -> pa.Table:
    return pa_csv.open_csv(io.BufferedReader(stream, _BLOCK_BYTES), read_options=pa_csv.ReadOptions(
        column_names=SCHEMA.names, block_size=_BLOCK_BYTES), parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(column_types=SCHEMA, strings_can_be_null=False)).read_all()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", default="desafio_bench_100k")
    parser.add_argument("--cards", type=int, default=30_000)
    args = parser.parse_args()
    url = bench_url(args.database)
    query = sql.SQL("SELECT {} FROM sicooperative.movimento WHERE id_cartao <= {}").format(
        identifiers(SCHEMA.names), sql.Literal(args.cards))
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query)
    seconds: dict[str, list[float]] = {"psql to /dev/null": [], "psycopg's Copy, a row per iteration": [],
                                       "the export's reader": []}
    with psycopg.connect(url) as conn:
        text = statement.as_string(conn)
        rows = {}
        for _ in range(3):  # each way three times, interleaved; the best of each is shown
            started = time.perf_counter()
            subprocess.run(["psql", url, "-q", "-c", f"\\copy ({query.as_string(conn)}) to /dev/null csv"], check=True)
            seconds["psql to /dev/null"].append(time.perf_counter() - started)
            started = time.perf_counter()
            with conn.cursor() as cur, cur.copy(text) as copy:
                rows["psycopg"] = _arrow(_RowPerIteration(copy)).num_rows
            seconds["psycopg's Copy, a row per iteration"].append(time.perf_counter() - started)
            started = time.perf_counter()
            rows["export"] = pa.Table.from_batches(list(_copied_batches(conn, statement, SCHEMA)), SCHEMA).num_rows
            seconds["the export's reader"].append(time.perf_counter() - started)
    assert rows["psycopg"] == rows["export"], rows
    count = rows["export"]
    best = {way: min(times) for way, times in seconds.items()}
    print(f"COPY of {count:,} movimento rows into Arrow (best of 3, {args.database}):")
    for way, took in best.items():
        print(f"  {way:<38} {took:6.2f} s  {took / count * 1e6:5.2f} µs a row")
    before, now = best["psycopg's Copy, a row per iteration"], best["the export's reader"]
    print(f"  the export's reader: {now / before:.2f}x the time of a row per iteration; "
          f"{(before - now) / count * 1e6:.2f} µs a row less")


if __name__ == "__main__":
    main()
