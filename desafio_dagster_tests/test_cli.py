"""`make run` on the defaults: the embedded Postgres, local Spark, the etl job."""

import csv
import os
import subprocess
import sys

from desafio_dagster.fakedata import GenerationSpec
from desafio_dagster.source_db import stop_embedded


def test_make_run_path_uses_the_embedded_postgres_and_publishes_every_client(tmp_path):
    home, output = tmp_path / "home", tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "DESAFIO_POSTGRES_URL"}
    env |= {"DESAFIO_HOME": str(home), "DESAFIO_OUTPUT_DIR": str(output), "DAGSTER_HOME": str(tmp_path)}
    try:
        done = subprocess.run([sys.executable, "-m", "desafio_dagster.cli", "run"], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        assert (home / "pgdata" / "PG_VERSION").exists(), "the embedded Postgres lives under DESAFIO_HOME"
        clients = GenerationSpec().clients
        assert f"{clients:,} client CSV files in {output / 'movements_csv'}" in done.stdout
        with open(output / "movements_csv" / "_index.csv", encoding="utf-8", newline="") as handle:
            index = list(csv.DictReader(handle))
        assert len(index) == clients and sum(int(r["rows"]) for r in index) > clients
        assert "rows loaded" in done.stderr and "extracted movimento" in done.stderr, "long phases log progress"
    finally:
        stop_embedded(home)
    stopped = subprocess.run([sys.executable, "-m", "desafio_dagster.cli", "stop-db"], env=env, capture_output=True, text=True)
    assert "was not running" in stopped.stdout
