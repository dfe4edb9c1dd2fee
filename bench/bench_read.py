"""Read benchmark: how fast the Spark tasks read the source from the export's snapshot, with 1 and
2 executor cores (local[1], local[2]), in one run. Each reads all movements (ranges balanced by the
snapshot's counts, two per core) and sums a column, so every row crosses Postgres -> COPY -> Arrow ->
Spark. On one machine the tasks share its cores with the Postgres backends that serve them.

    python bench/bench_read.py          # the database of bench_populate.py (desafio_bench)
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_populate import bench_url  # noqa: E402

from desafio_dagster.core.extract import ExportedSnapshot, read_tables  # noqa: E402
from desafio_dagster.core.source_db import SourceDatabase  # noqa: E402
from desafio_dagster.core.spark_session import start_session  # noqa: E402


def main() -> None:
    from pyspark.sql import functions as F

    db = SourceDatabase(bench_url())
    results = []
    for cores in (1, 2):
        spark = start_session(f"local[{cores}]")
        exported = ExportedSnapshot.open(db)
        try:
            snapshot = exported.snapshot
            movements = read_tables(spark, exported, snapshot.client_ranges(2 * cores))["movimento"]
            movements.agg(F.sum("vlr_transacao")).collect()  # warm: Python workers started
            started = time.monotonic()
            movements.agg(F.sum("vlr_transacao")).collect()
            seconds = time.monotonic() - started
        finally:
            exported.close()
            spark.stop()
        rows = snapshot.counts["movimento"]
        results.append((cores, rows, seconds))
    print(f"read benchmark: {results[0][1]:,} movements from the export's snapshot, one connection per task")
    for cores, rows, seconds in results:
        print(f"  local[{cores}]: {seconds:6.2f} s, {rows / seconds:12,.0f} rows/s")
    print(f"  speed-up with 2 cores: {results[0][2] / results[1][2]:.2f}x")


if __name__ == "__main__":
    main()
