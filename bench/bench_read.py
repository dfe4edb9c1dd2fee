"""Read benchmark: how fast the Spark tasks read and join the source from the export's snapshot, with 1
and 2 executor cores (local[1], local[2]), in one run. Each task reads a range of clients from the four
tables (ranges balanced by the snapshot's counts, two per core) and joins them into the flat view, and
the job counts the rows, so every row crosses Postgres -> COPY -> Arrow -> the join -> Spark. On one
machine the tasks share its cores with the Postgres backends that serve them.

    python bench/bench_read.py          # the database of bench_populate.py (desafio_bench)
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_populate import bench_url  # noqa: E402

from desafio_dagster.core.export.extract import ExportedSnapshot  # noqa: E402
from desafio_dagster.core.export.transform import snapshot_view  # noqa: E402
from desafio_dagster.core.source.source_db import SourceDatabase  # noqa: E402
from desafio_dagster.core.spark.connect_server import stop_server  # noqa: E402
from desafio_dagster.core.spark.spark_session import connect  # noqa: E402


def main() -> None:
    db = SourceDatabase(bench_url())
    results = []
    home = Path(tempfile.mkdtemp(prefix="bench-read-"))  # the project's Spark server, one master after the other
    for cores in (1, 2):
        connected = connect(f"local[{cores}]", home=home)
        spark = connected.session
        exported = ExportedSnapshot.open(db)
        try:
            snapshot = exported.snapshot
            view = snapshot_view(spark, exported, 2 * cores).frame()
            view.count()  # warm: Python workers started
            started = time.monotonic()
            view.count()
            seconds = time.monotonic() - started
        finally:
            exported.close()
            connected.close()
        rows = snapshot.counts["movimento"]
        results.append((cores, rows, seconds))
    stop_server(home)
    print(f"read benchmark: {results[0][1]:,} movements from the export's snapshot, one connection per task")
    for cores, rows, seconds in results:
        print(f"  local[{cores}]: {seconds:6.2f} s, {rows / seconds:12,.0f} rows/s")
    print(f"  speed-up with 2 cores: {results[0][2] / results[1][2]:.2f}x")


if __name__ == "__main__":
    main()
