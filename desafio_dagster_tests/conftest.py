"""Fixtures: a real Postgres server (DESAFIO_POSTGRES_URL, or an embedded one) and a
fresh database per test, dropped afterwards."""

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from desafio_dagster.core.source import loading
from desafio_dagster.core.source.embedded import embedded_url, stop_embedded
from desafio_dagster.core.source.fakedata import generate
from desafio_dagster.core.source.source_db import SourceDatabase
from desafio_dagster_tests.helpers import SMALL, fresh_database

SPARK_HOME_VARIABLE = "DESAFIO_TEST_SPARK_HOME"


@pytest.fixture(scope="session")
def server_url(tmp_path_factory):
    """A Postgres server for the session: DESAFIO_POSTGRES_URL, else an embedded one."""
    url = os.environ.get("DESAFIO_POSTGRES_URL")
    if url:
        yield url
        return
    home = tmp_path_factory.mktemp("embedded-home")
    yield embedded_url(home)
    stop_embedded(home)


@pytest.fixture
def database_url(server_url, monkeypatch):
    """A fresh database on the server; DESAFIO_POSTGRES_URL points at it during the test."""
    with fresh_database(server_url, "desafio_test") as (_, url):
        monkeypatch.setenv("DESAFIO_POSTGRES_URL", url)
        yield url


@pytest.fixture
def dagster_storage_url(server_url, monkeypatch):
    """A fresh database for Dagster's runs, event log and schedules, with DAGSTER_POSTGRES_*
    (what docker/dagster.yaml reads) pointing at it."""
    with fresh_database(server_url, "dagster_storage_test") as (name, url):
        params = conninfo_to_dict(server_url)
        host = params.get("host") or "127.0.0.1"
        if host.startswith("/"):
            # A Unix socket (the embedded server listens on no TCP port): the URL dagster-postgres
            # builds has no room for a path, so leave its host empty and let libpq take PGHOST.
            monkeypatch.setenv("PGHOST", host)
            host = ""
        monkeypatch.setenv("DAGSTER_POSTGRES_HOST", host)
        monkeypatch.setenv("DAGSTER_POSTGRES_PORT", str(params.get("port") or 5432))
        monkeypatch.setenv("DAGSTER_POSTGRES_USER", params.get("user") or "postgres")
        monkeypatch.setenv("DAGSTER_POSTGRES_PASSWORD", params.get("password") or "")  # empty: trust auth
        monkeypatch.setenv("DAGSTER_POSTGRES_DB", name)
        yield url


@pytest.fixture
def private_server(tmp_path):
    """(home, superuser URL) of an embedded Postgres of the test's own, whose settings the test may
    change (pg_hba.conf, max_connections); stopped afterwards."""
    home = tmp_path / "private-pg"
    try:
        yield home, embedded_url(home)
    finally:
        stop_embedded(home)


@pytest.fixture
def source_db(database_url) -> SourceDatabase:
    return SourceDatabase(database_url, "sicooperative")


@pytest.fixture
def populated_db(source_db) -> SourceDatabase:
    loading.replace(source_db, generate(SMALL))
    return source_db


@pytest.fixture
def env_home(tmp_path, monkeypatch) -> Path:
    """DESAFIO_HOME and DESAFIO_OUTPUT_DIR in a temporary folder."""
    monkeypatch.setenv("DESAFIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DESAFIO_OUTPUT_DIR", str(tmp_path / "data"))
    yield tmp_path
    from desafio_dagster.core.spark.connect_server import stop_server

    stop_server(tmp_path / "home")  # a project server a test started there (the run's own is elsewhere)


def pytest_configure(config):
    """The run's Spark Connect server gets a folder of its own, shared by the xdist workers (they inherit it)."""
    if not hasattr(config, "workerinput") and not os.environ.get(SPARK_HOME_VARIABLE):
        os.environ[SPARK_HOME_VARIABLE] = tempfile.mkdtemp(prefix="desafio-test-spark-")


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput") and (home := os.environ.pop(SPARK_HOME_VARIABLE, "")):
        from desafio_dagster.core.spark.connect_server import stop_server

        stop_server(Path(home))
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def spark_server():
    """One warm Spark Connect server (local[4]: the tests wait on Postgres and files more than on the CPU) for the whole test run: the first worker starts it, the
    others reuse it. Every test, and every command a test starts, reaches it as a server of one's own
    (DESAFIO_SPARK_MASTER=sc://...), unless the test sets a master of its own."""
    from desafio_dagster.core.spark.spark_session import project_server

    server = project_server("local[4]", home=Path(os.environ[SPARK_HOME_VARIABLE]))
    os.environ.update({"DESAFIO_SPARK_MASTER": server.url, "SPARK_CONNECT_AUTHENTICATE_TOKEN": server.token,
                       "DESAFIO_TASK_SECRET": server.task_key})
    return server


@pytest.fixture
def connected(spark_server):
    """A Spark Connect session on the run's server, for tests that call the pure Spark modules directly."""
    from desafio_dagster.core.spark.spark_session import connect

    connected = connect(spark_server.url)
    yield connected
    connected.close()


@pytest.fixture
def spark_session(connected):
    return connected.session


@pytest.fixture
def s3(monkeypatch):
    """A real S3 server (moto's) on loopback with an empty bucket, and the standard AWS variables pointing
    at it (fake keys) in this process's environment; stopped afterwards. DESAFIO_OUTPUT_DIR is not set."""
    import requests
    from moto.server import ThreadedMotoServer

    from desafio_dagster.core.output.s3 import AWS_VARIABLES
    from desafio_dagster_tests.helpers import S3, free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for name in AWS_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        # moto keeps its buckets per process, whichever server serves them: a bucket of the test's own.
        s3 = S3(endpoint=f"http://127.0.0.1:{port}", bucket=f"desafio-{uuid.uuid4().hex[:12]}",
                secret=f"fake-secret-{uuid.uuid4().hex}")
        for name, value in s3.environment.items():
            monkeypatch.setenv(name, value)
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
        requests.post(f"{s3.endpoint}/moto-api/reset", timeout=10)  # forget every bucket
    finally:
        server.stop()


# --- the fault table: each test marked chaos(fault=..., where=..., outcome=...) is one row ----------------


def pytest_collection_modifyitems(items):
    """A chaos test's row, its parameters filled in, rides on its reports (xdist sends them to the controller)."""
    for item in items:
        mark = item.get_closest_marker("chaos")
        if mark and mark.kwargs:
            params = item.callspec.params if hasattr(item, "callspec") else {}
            item.user_properties.append(("chaos", {key: value.format(**params) for key, value in mark.kwargs.items()}))


def pytest_terminal_summary(terminalreporter):
    """The fault table (make chaos, make test): fault, where it was injected, what the export did, and whether
    the test found the published output whole, audited and exactly the right files afterwards."""
    rows = {}
    for category in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(category, []):
            row = dict(report.user_properties).get("chaos")
            if row and (report.nodeid not in rows or category != "passed"):
                intact = {"passed": "yes", "skipped": "not run"}.get(category, "NO: the test failed")
                rows[report.nodeid] = (row["fault"], row["where"], row["outcome"], intact)
    if rows:
        header = ("fault", "injected at", "outcome", "output whole and exact")
        lines = [header, *sorted(rows.values())]
        widths = [max(len(line[i]) for line in lines) for i in range(4)]
        terminalreporter.section("faults, counted")
        for number, line in enumerate(lines):
            terminalreporter.line(" | ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
            if number == 0:
                terminalreporter.line("-+-".join("-" * width for width in widths))
