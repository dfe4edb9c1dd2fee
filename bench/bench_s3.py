"""S3 benchmark: the `export` job (whole `dagster job execute` process, full export) to a local folder
and to S3 (moto's server on loopback, in this process), in one run; the ratio S3 / local (goal <= 1.5x),
both outputs byte-compared, and the S3 requests (counted from the server's request log, by kind) of the
full export and of an incremental one after 1% of the clients changed: per written client and per
unchanged client.

    python bench/bench_s3.py                   # 10,000 clients; populates desafio_bench_s3 first if empty
    python bench/bench_s3.py --clients 100000 --movements-per-card 6   # its own database, kept too
    python bench/bench_s3.py --repeat 3

Uses DESAFIO_POSTGRES_URL's server (default postgresql://postgres@127.0.0.1:5432/postgres) and its own
database (desafio_bench_s3: 10,000 clients, about 1M movements), kept for the next run.
"""

import argparse
import collections
import csv
import io
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
from measure import free_port, mib, run_measured, warm_engine  # noqa: E402

from desafio_dagster.core.output.version import MANIFEST_FILE, parse_manifest  # noqa: E402

EXPORT = [sys.executable, "-m", "dagster", "job", "execute", "-m", "desafio_dagster.definitions", "-j", "export"]


def bench_url(database: str) -> str:
    with psycopg.connect(SERVER, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return make_conninfo(SERVER, dbname=database)


def change_one_percent(url: str) -> int:
    """A new row version for 1% of the clients (the same values): their fingerprints change, their files not."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("UPDATE sicooperative.associado SET idade = idade WHERE id % 100 = 0").rowcount


def print_requests(title: str, requests: collections.Counter, version: str, written: int, unchanged: int) -> None:
    """The requests of one export (version: the one it published), by kind; the client files' requests
    split by whether they touched that version's own files or earlier versions' (the unchanged clients')."""
    total = sum(requests.values())
    print(f"  S3 requests, {title}: {total:,} for {written:,} written and {unchanged:,} unchanged clients")
    kinds = collections.Counter()
    for (what, kind, holder), n in requests.items():
        kinds[(what, kind if kind == "other" else "client file" + (" (earlier)" if holder != version else ""))] += n
    for (what, kind), n in sorted(kinds.items(), key=lambda item: -item[1]):
        print(f"    {what:<6} {kind:<22} {n:>9,}")
    earlier = sum(n for (_, kind), n in kinds.items() if kind == "client file (earlier)")
    print(f"    per written client: {total / max(written, 1):.3f}; client-file requests per unchanged client: "
          f"{earlier / max(unchanged, 1):.3f}")


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
            what = "DELETE" if parts[0] == "POST" and "delete" in parts[1] else what
            version = next((part for part in path.split("/") if part.startswith(".v-")), "")
            self.counts[(what, kind, version)] += 1


def _figures(manifest: bytes) -> list[dict]:
    """_snapshot.arrow's rows without the fingerprint (the row versions, which change_one_percent changed)."""
    return parse_manifest(manifest).drop_columns(["fingerprint"]).to_pylist()


def published(client, output: str) -> str:
    """The version an S3 output's pointer names (read with boto3: the counter sees it as "other")."""
    bucket, _, prefix = output.removeprefix("s3://").partition("/")
    return client.get_object(Bucket=bucket, Key=f"{prefix}/movements_csv/_published")["Body"].read().decode().strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=10_000, help="clients of the bench database")
    parser.add_argument("--movements-per-card", type=int, default=66, help="at most, per card")
    parser.add_argument("--populate", action="store_true", help="populate the database again first")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side; the median is reported")
    args = parser.parse_args()
    database = "desafio_bench_s3" if (args.clients, args.movements_per_card) == (10_000, 66) else \
        f"desafio_bench_s3_{args.clients}_{args.movements_per_card}"

    import boto3
    from moto.server import ThreadedMotoServer

    url = bench_url(database)
    if args.populate or movements(url)[0] == 0:
        seconds, peak = populate_job(url, {"clients": args.clients, "movements_per_card": [0, args.movements_per_card],
                                           "seed": 11})
        print(f"populated {database} in {seconds:.1f} s (peak {mib(peak)})")
    rows, clients = movements(url)
    print(f"{database}: {clients:,} clients, {rows:,} movements")

    port = free_port()
    counter = RequestCounter()
    logging.getLogger("werkzeug").addHandler(counter)
    logging.getLogger("werkzeug").setLevel(logging.INFO)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    aws = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    client = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench-secret")
    client.create_bucket(Bucket="desafio-bench")
    times: dict[str, list[float]] = {"local": [], "s3": []}
    peaks: dict[str, list[int]] = {"local": [], "s3": []}
    requests: collections.Counter = collections.Counter()
    try:
        with tempfile.TemporaryDirectory() as work, warm_engine(Path(work) / "home"):
            for attempt in range(args.repeat):
                for side in ("local", "s3") if attempt % 2 == 0 else ("s3", "local"):
                    run_dir = Path(work) / f"{side}-{attempt}"
                    output = f"s3://desafio-bench/run-{attempt}" if side == "s3" else str(run_dir / "out")
                    env = {**os.environ, **(aws if side == "s3" else {}), "DESAFIO_POSTGRES_URL": url,
                           "DAGSTER_HOME": str(run_dir), "DESAFIO_HOME": str(Path(work) / "home"),
                           "DESAFIO_OUTPUT_DIR": output}
                    run_dir.mkdir()
                    before = collections.Counter(counter.counts)
                    seconds, peak, _ = run_measured(EXPORT, env)
                    times[side].append(seconds)
                    peaks[side].append(peak)
                    if side == "s3":
                        requests, full_version = counter.counts - before, published(client, output)
                    print(f"  {side:<5} export {seconds:6.1f} s  peak {mib(peak)}", flush=True)

            # An incremental export to S3 after 1% of the clients changed: what it costs per written client,
            # and per unchanged one (goal: no request).
            changed = change_one_percent(url)
            before = collections.Counter(counter.counts)
            seconds, peak, _ = run_measured(EXPORT, env | aws | {"DESAFIO_OUTPUT_DIR": f"s3://desafio-bench/run-{args.repeat - 1}"})
            incremental = counter.counts - before
            incremental_version = published(client, f"s3://desafio-bench/run-{args.repeat - 1}")
            print(f"  s3    incremental export ({changed:,} clients changed) {seconds:6.1f} s  peak {mib(peak)}", flush=True)

            # Same bytes: the incremental S3 version, each file read where its index says (the README's
            # reader), against the last local version (the changed clients' rows are the same). One GET each.
            base = f"run-{args.repeat - 1}/movements_csv"

            def get(key: str) -> bytes:
                return client.get_object(Bucket="desafio-bench", Key=f"{base}/{key}")["Body"].read()

            version = incremental_version
            index = list(csv.DictReader(io.StringIO(get(f"{version}/_index.csv").decode("utf-8"), newline="")))
            local = (Path(work) / f"local-{args.repeat - 1}" / "out" / "movements_csv").resolve()
            same = sorted(p.name for p in local.iterdir() if not p.name.startswith("_")) == sorted(r["file"] for r in index)
            same = same and all(get(f"{row['version']}/{row['file']}") == (local / row["file"]).read_bytes() for row in index)
            # _snapshot.arrow but the fingerprints of the changed row versions.
            same = same and _figures(get(f"{version}/{MANIFEST_FILE}")) == _figures((local / MANIFEST_FILE).read_bytes())
    finally:
        server.stop()

    local_s, s3_s = statistics.median(times["local"]), statistics.median(times["s3"])
    print(f"\nfull export of {rows:,} movements, {clients:,} clients (median of {args.repeat}):")
    print(f"  local disk    {local_s:6.1f} s   peak {mib(max(peaks['local']))}")
    print(f"  S3 (loopback) {s3_s:6.1f} s   peak {mib(max(peaks['s3']))}")
    print(f"  ratio S3 / local: {s3_s / local_s:.2f}x (goal <= 1.5x)")
    print(f"  the incremental S3 version, read as the README says, byte-identical to the local one "
          f"(client files; _snapshot.arrow but its fingerprints): {same}")
    print_requests("full export", requests, full_version, clients, 0)
    print_requests("incremental export", incremental, incremental_version, changed, clients - changed)


if __name__ == "__main__":
    main()
