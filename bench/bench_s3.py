"""S3 benchmark: the `export` job (whole `dagster job execute` process, full export) to a local folder
and to S3 (moto's server on loopback, in this process), in one run; the ratio S3 / local (goal <= 1.5x),
the S3 requests per client (counted from the server's request log), and both outputs byte-compared.

    python bench/bench_s3.py                   # populates desafio_bench_s3 first if it is empty
    python bench/bench_s3.py --repeat 3 --populate 10000

Uses DESAFIO_POSTGRES_URL's server (default postgresql://postgres@127.0.0.1:5432/postgres) and its own
database desafio_bench_s3 (10,000 clients, about 1M movements), kept for the next run.
"""

import argparse
import collections
import logging
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).parent))
from bench_export import movements  # noqa: E402
from bench_populate import SERVER, populate_job  # noqa: E402
from measure import mib, run_measured  # noqa: E402

DATABASE = "desafio_bench_s3"
EXPORT = [sys.executable, "-m", "dagster", "job", "execute", "-m", "desafio_dagster.definitions", "-j", "export"]


def bench_url() -> str:
    with psycopg.connect(SERVER, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return make_conninfo(SERVER, dbname=DATABASE)


class RequestCounter(logging.Handler):
    """Counts the requests moto's server logs (werkzeug's access log), by method and by object kind."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.counts: collections.Counter = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        line = str(record.args[0]) if record.args else record.getMessage()
        parts = re.sub(r"\x1b\[[0-9;]*m", "", line).split()  # werkzeug colours some lines (206, 404)
        if len(parts) >= 2 and parts[0] in ("GET", "PUT", "POST", "HEAD", "DELETE"):
            path = parts[1].split("?")[0]
            kind = "client file" if "/.v-" in path and path.rsplit("/", 1)[-1][:1].isdigit() else "other"
            what = "LIST" if parts[0] == "GET" and "list-type" in parts[1] else parts[0]
            self.counts[(what, kind)] += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--populate", type=int, metavar="CLIENTS", help="populate this many clients first")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side; the median is reported")
    args = parser.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer
    from pyarrow import fs

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from desafio_dagster_tests.helpers import free_port

    url = bench_url()
    if args.populate or movements(url)[0] == 0:
        seconds, peak = populate_job(url, {"clients": args.populate or 10_000, "movements_per_card": [0, 66], "seed": 11})
        print(f"populated {DATABASE} in {seconds:.1f} s (peak {mib(peak)})")
    rows, clients = movements(url)
    print(f"{DATABASE}: {clients:,} clients, {rows:,} movements")

    port = free_port()
    counter = RequestCounter()
    logging.getLogger("werkzeug").addHandler(counter)
    logging.getLogger("werkzeug").setLevel(logging.INFO)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    aws = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench-secret").create_bucket(Bucket="desafio-bench")
    times: dict[str, list[float]] = {"local": [], "s3": []}
    peaks: dict[str, list[int]] = {"local": [], "s3": []}
    requests: collections.Counter = collections.Counter()
    try:
        with tempfile.TemporaryDirectory() as work:
            for attempt in range(args.repeat):
                for side in ("local", "s3") if attempt % 2 == 0 else ("s3", "local"):
                    run_dir = Path(work) / f"{side}-{attempt}"
                    output = f"s3://desafio-bench/run-{attempt}" if side == "s3" else str(run_dir / "out")
                    env = {**os.environ, **(aws if side == "s3" else {}), "DESAFIO_POSTGRES_URL": url,
                           "DAGSTER_HOME": str(run_dir), "DESAFIO_HOME": str(run_dir / "home"),
                           "DESAFIO_OUTPUT_DIR": output}
                    run_dir.mkdir()
                    before = collections.Counter(counter.counts)
                    seconds, peak, _ = run_measured(EXPORT, env)
                    times[side].append(seconds)
                    peaks[side].append(peak)
                    if side == "s3":
                        requests = counter.counts - before
                    print(f"  {side:<5} export {seconds:6.1f} s  peak {mib(peak)}", flush=True)

            # Same bytes: the last S3 version, copied down, against the last local version.
            os.environ.update(aws)
            s3 = fs.S3FileSystem(region="us-east-1", endpoint_override=f"127.0.0.1:{port}", scheme="http")
            base = f"desafio-bench/run-{args.repeat - 1}/movements_csv"
            with s3.open_input_stream(f"{base}/_published") as handle:
                version = handle.read().decode().strip()
            down = Path(work) / "s3-copy"
            down.mkdir()
            fs.copy_files(f"{base}/{version}", str(down), source_filesystem=s3,
                          destination_filesystem=fs.LocalFileSystem(), use_threads=True)
            local = (Path(work) / f"local-{args.repeat - 1}" / "out" / "movements_csv").resolve()
            names = sorted(p.name for p in local.iterdir() if p.name != "_readback.csv")
            same = names == sorted(p.name for p in down.iterdir() if p.name != "_readback.csv") and all(
                (local / n).read_bytes() == (down / n).read_bytes() for n in names)
    finally:
        server.stop()

    local_s, s3_s = statistics.median(times["local"]), statistics.median(times["s3"])
    print(f"\nfull export of {rows:,} movements, {clients:,} clients (median of {args.repeat}):")
    print(f"  local disk    {local_s:6.1f} s   peak {mib(max(peaks['local']))}")
    print(f"  S3 (loopback) {s3_s:6.1f} s   peak {mib(max(peaks['s3']))}")
    print(f"  ratio S3 / local: {s3_s / local_s:.2f}x (goal <= 1.5x)")
    print(f"  byte-identical outputs (client files, _index.csv, _snapshot.csv, _format.json): {same}")
    total = sum(requests.values())
    print(f"  S3 requests in one export: {total:,} ({total / clients:.2f} per client)")
    for (what, kind), n in sorted(requests.items(), key=lambda item: -item[1]):
        print(f"    {what:<6} {kind:<12} {n:>8,}  ({n / clients:.2f} per client)")


if __name__ == "__main__":
    main()
