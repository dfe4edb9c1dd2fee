"""Fixtures: a real Postgres server (DESAFIO_POSTGRES_URL, or an embedded one) and a
fresh database per test, dropped afterwards."""

import os
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from desafio_dagster.fakedata import GenerationSpec, generate
from desafio_dagster.source_db import SourceDatabase, embedded_url, stop_embedded

SMALL = GenerationSpec(clients=40, accounts_per_client=(1, 2), cards_per_account=(1, 2), movements_per_card=(1, 6), seed=7)


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
    name = f"desafio_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    monkeypatch.setenv("DESAFIO_POSTGRES_URL", url)
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def source_db(database_url) -> SourceDatabase:
    return SourceDatabase(database_url, "sicooperative")


@pytest.fixture
def populated_db(source_db) -> SourceDatabase:
    source_db.replace(generate(SMALL))
    return source_db


@pytest.fixture
def env_home(tmp_path, monkeypatch) -> Path:
    """DESAFIO_HOME and DESAFIO_OUTPUT_DIR in a temporary folder."""
    monkeypatch.setenv("DESAFIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DESAFIO_OUTPUT_DIR", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture
def spark_session():
    """A local Spark session for tests that call the pure Spark modules directly (the active
    one, or a new one in the same JVM after a Dagster run stopped it)."""
    from desafio_dagster.spark_session import start_session

    return start_session("local[2]")
