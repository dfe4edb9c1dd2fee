"""Write–audit–publish, overlapping runs and transient faults (real Postgres, real Spark, real files)."""

import os
import re
import threading
import time
from decimal import Decimal
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from pyspark.sql import functions as F

from desafio_dagster.core.export import extract
from desafio_dagster.core.export.audit import AuditError
from desafio_dagster.core.export.extract import ExportedSnapshot
from desafio_dagster.core.export.publish import publish_per_client
from desafio_dagster.core.output.store import open_store
from desafio_dagster.core.source import loading
from desafio_dagster.core.source.fakedata import TABLES, GenerationSpec, generate
from desafio_dagster.core.source.source_db import SourceDatabase, SourceDatabaseError
from desafio_dagster.defs.utils import user_errors
from desafio_dagster_tests.helpers import (
    FULL_REFRESH,
    REPO,
    assert_untouched,
    expected_files,
    exported_view,
    failed_run_message,
    failure_message,
    output,
    published_files,
    run,
    snapshot,
    start_dagster_cli,
)


def rejected_versions(folder: Path) -> list[Path]:
    return sorted(folder.parent.glob(".movements_csv.rejected-*"))


@pytest.mark.parametrize("fault", ["lost rows", "duplicated rows"])
def test_a_view_that_loses_or_duplicates_a_clients_rows_is_rejected(published, source_db, spark_session, fault):
    with exported_view(source_db, spark_session) as (view, exported):
        _reject_broken_view(published, view, exported, fault)


def _reject_broken_view(published, snapshot_view, exported, fault):
    folder = published[0]
    view = snapshot_view.frame()
    victim = view.filter("movement_id IS NOT NULL").agg(F.min("client_id")).first()[0]
    if fault == "lost rows":
        first_movement = view.filter(F.col("client_id") == victim).agg(F.min("movement_id")).first()[0]
        broken = view.filter(F.col("movement_id").isNull() | (F.col("movement_id") != first_movement))
    else:
        broken = view.unionByName(view.filter(F.col("client_id") == victim))
    victim_file = next(f["file"] for f in exported.clients.to_pylist() if f["client_id"] == victim)
    with pytest.raises(AuditError) as raised:
        publish_per_client(broken, open_store(folder.parent, folder.name), exported.clients)
    message = str(raised.value)
    assert "client_totals_match_snapshot" in message and victim_file in message and "Nothing was published" in message
    assert_untouched(published)
    [rejected] = rejected_versions(folder)
    assert str(rejected) in message and (rejected / victim_file).exists()
    # Only the last rejected version is kept.
    with pytest.raises(AuditError):
        publish_per_client(broken, open_store(folder.parent, folder.name), exported.clients)
    [second] = rejected_versions(folder)
    assert second != rejected
    assert_untouched(published)


def test_unmasked_card_numbers_are_rejected_while_masking_is_on(published, source_db, spark_session):
    folder = published[0]
    with exported_view(source_db, spark_session, mask=False) as (view, exported):
        with pytest.raises(AuditError, match=r"card_numbers_masked failed, \d+ files with a run of 12 or more digits"):
            publish_per_client(view, open_store(folder.parent, folder.name), exported.clients, masked=True, by_client=True)
        assert_untouched(published)
        # The same files are what a run with masking off publishes.
        assert publish_per_client(view, open_store(folder.parent, folder.name), exported.clients, masked=False, by_client=True).rows == sum(
            exported.clients["rows"].to_pylist())


def test_audit_failures_and_explained_errors_are_never_retried_but_lost_connections_are():
    def failure(error: Exception) -> dg.Failure:
        with pytest.raises(dg.Failure) as raised, user_errors():
            raise error
        return raised.value

    assert failure(AuditError("audit rule x failed")).allow_retries is False
    assert failure(SourceDatabaseError("table missing")).allow_retries is False
    assert failure(psycopg.errors.UndefinedTable("no table")).allow_retries is False
    lost = failure(psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"))
    assert lost.allow_retries is not False and "connection to Postgres lost" in lost.description


def _wait_for_backend(db, application: str, condition: str, alive) -> None:
    """Until a connection of that application meets the condition on pg_stat_activity (as Postgres reports it)."""
    deadline = time.monotonic() + 120
    query = f"SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s AND {condition}"
    with psycopg.connect(db.url, autocommit=True) as admin:
        while not admin.execute(query, (application,)).fetchone():
            assert alive() and time.monotonic() < deadline, f"no {application} connection with {condition}"
            time.sleep(0.01)


def test_a_populate_queued_behind_the_snapshot_makes_the_tasks_give_way(published, source_db, spark_session):
    """pg_dump's rule: a populate that waits for the exporter's lock would hold every later reader
    back, the tasks included, while the exporter waits for the tasks. The tasks lock NOWAIT and fail
    at once with a transient error; once the exporter closes, the populate goes on."""
    from desafio_dagster.core.export.extract import SourceReadError

    folder = published[0]
    with exported_view(source_db, spark_session) as (view, snap):
        populate = threading.Thread(target=lambda: loading.replace(source_db, generate(GenerationSpec(clients=70, seed=32))))
        populate.start()
        _wait_for_backend(source_db, "desafio_dagster populate", "wait_event_type = 'Lock'", populate.is_alive)  # queued behind us
        started = time.monotonic()
        with pytest.raises(SourceReadError, match="a populate is waiting to replace the source tables"):
            publish_per_client(view, open_store(folder.parent, folder.name), snap.clients, by_client=True)
        assert time.monotonic() - started < 60 and populate.is_alive()
    populate.join(120)
    assert not populate.is_alive() and source_db.row_counts()["associado"] == 70
    assert_untouched(published)


def test_a_cleanup_that_fails_after_publication_is_reported_and_the_version_stays_published(
        published, source_db, spark_session):
    from desafio_dagster.core.output.store import LocalStore

    class CleanupFails(LocalStore):  # the disk refuses to remove the versions before the one just published
        def remove_leftovers(self, keep: set[str], spare: bool = False) -> None:
            if len(keep) > 1:
                raise OSError("Device or resource busy")
            super().remove_leftovers(keep, spare)

    folder, _, version = published
    with exported_view(source_db, spark_session) as (view, snap):
        result = publish_per_client(view, CleanupFails(folder.parent, folder.name), snap.clients, by_client=True)
    assert result.cleanup_failed == "Device or resource busy"
    assert folder.resolve().name == result.version_name != version.name
    assert published_files(folder) == expected_files(source_db, True), "the new version is the one published"
    assert version.exists(), "the previous version, as after any publication"


def test_a_populate_that_arrives_mid_export_never_hangs_it(source_db, env_home):
    """A populate with another seed arrives while the export holds its snapshot. The export ends
    either on its snapshot (the populate waits for it; the warning says the source changed) or, if the
    populate queued before its tasks locked the tables, by retrying from a fresh snapshot."""
    older, newer = (GenerationSpec(clients=n, movements_per_card=(0, 4), seed=s) for n, s in ((50, 31), (70, 32)))
    loading.replace(source_db, generate(older))
    results = {}

    def export_in_a_thread() -> None:
        """The export, its instance made, read and closed in this thread (SQLite's objects stay in their thread)."""
        with dg.DagsterInstance.ephemeral() as instance:
            result = run("export", instance=instance)
            results.update(success=result.success, message=failed_run_message(result) if not result.success else "",
                           retried=any(e.event_type == dg.DagsterEventType.STEP_RESTARTED for e in result.all_events),
                           checks={e.check_name: e for e in result.get_asset_check_evaluations()})

    export = threading.Thread(target=export_in_a_thread)
    export.start()
    # Its snapshot taken (it holds an xmin from then on; the share locks come before it), not merely
    # idle between the statements that open the transaction.
    _wait_for_backend(source_db, "desafio_dagster export", "state = 'idle in transaction' AND backend_xmin IS NOT NULL",
                      export.is_alive)
    loading.replace(source_db, generate(newer))  # waits for the export's snapshot to close
    export.join(300)
    assert not export.is_alive(), "the export hangs"
    assert results["success"], results["message"]
    retried, checks = results["retried"], results["checks"]
    assert all(e.passed for name, e in checks.items() if name != "source_unchanged_since_export")
    published = published_files(output(env_home))
    if retried:  # the second attempt read the new source
        assert published == expected_files(source_db, True)
    else:
        warning = checks["source_unchanged_since_export"]
        assert not warning.passed and warning.severity == dg.AssetCheckSeverity.WARN
        assert "the output is older than the source" in warning.description
        loading.replace(source_db, generate(older))  # the older snapshot again, to compare row by row
        assert published == expected_files(source_db, True)


def spec_fingerprint(spec: GenerationSpec) -> tuple[dict[str, int], Decimal]:
    counts, total = dict.fromkeys(TABLES, 0), Decimal(0)
    for chunk in generate(spec):
        for name, table in chunk.tables().items():
            counts[name] += table.num_rows
            if name == "movimento":
                total += sum(table.column("vlr_transacao").to_pylist(), Decimal(0))
    return counts, total


def test_two_populates_started_together_both_finish_with_one_complete_snapshot(database_url):
    """On an empty database, so both also race to create the schema: no deadlock."""
    specs = [GenerationSpec(clients=300, movements_per_card=(0, 8), seed=s) for s in (41, 42)]
    db = SourceDatabase(database_url, "sicooperative", lock_timeout=120)
    errors, barrier = [], threading.Barrier(2)

    def populate(spec):
        barrier.wait()
        try:
            loading.replace(db, generate(spec))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=populate, args=(spec,)) for spec in specs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not errors and not any(t.is_alive() for t in threads)
    with db.connect() as conn:
        total = conn.execute("SELECT sum(vlr_transacao) FROM movimento").fetchone()[0]
    assert (db.row_counts(), total) in [spec_fingerprint(spec) for spec in specs]


def test_a_lock_wait_names_the_holder_and_gives_up_after_the_timeout(populated_db, tmp_path):
    waits = []
    with populated_db.connect(purpose="test holder") as holder:
        holder.execute("LOCK TABLE movimento IN ACCESS EXCLUSIVE MODE")
        pid = holder.info.backend_pid
        impatient = SourceDatabase(populated_db.url, populated_db.schema, lock_timeout=2)
        started = time.monotonic()
        with pytest.raises(SourceDatabaseError) as raised:
            ExportedSnapshot.open(impatient, on_wait=waits.append)
        assert 1.5 < time.monotonic() - started < 10
    assert [w for w in waits if f"pid {pid} (desafio_dagster test holder" in w]
    assert re.search(rf"gave up after 2 s waiting for .*held by pid {pid} \(desafio_dagster test holder.*"
                     r"lock_timeout_seconds", str(raised.value))


# Waits for the export's COPY of `movimento` inside Postgres (polling every millisecond), so the
# watch never depends on this process's threads being scheduled while the export runs.
TERMINATE_NEXT_COPY = """
CREATE FUNCTION pg_temp.terminate_next_copy(done int[], patience interval) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    victim int;
    deadline timestamptz := clock_timestamp() + patience;
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();
        SELECT pid INTO victim FROM pg_stat_activity
        WHERE application_name = 'desafio_dagster export task' AND state = 'active' AND datname = current_database()
          AND query LIKE 'COPY (SELECT%movimento%' AND NOT pid = ANY(done);
        IF victim IS NOT NULL THEN
            PERFORM pg_terminate_backend(victim);
            RETURN victim;
        END IF;
        EXIT WHEN clock_timestamp() > deadline;
        PERFORM pg_sleep(0.001);
    END LOOP;
    RETURN NULL;
END $$"""


class Terminator(threading.Thread):
    """Terminates the connection of the Spark task that streams `movimento` out (COPY ... TO STDOUT):
    once, or on every attempt."""

    def __init__(self, db: SourceDatabase, every_attempt: bool):
        super().__init__(daemon=True)
        self.db, self.every_attempt, self.pids, self.stop = db, every_attempt, set(), threading.Event()

    @property
    def terminated(self) -> int:
        return len(self.pids)

    def run(self):
        with psycopg.connect(self.db.url, autocommit=True) as admin:
            admin.execute(TERMINATE_NEXT_COPY)
            while not self.stop.is_set() and (self.every_attempt or not self.pids):
                (pid,) = admin.execute("SELECT pg_temp.terminate_next_copy(%s, '0.5 s')", (list(self.pids),)).fetchone()
                if pid is not None:
                    self.pids.add(pid)


@pytest.fixture
def published_large(source_db, env_home):
    """An output published from a source whose movements take a while to stream out."""
    loading.replace(source_db, generate(GenerationSpec(clients=2_000, movements_per_card=(10, 40), seed=17)))
    assert run("export").success
    folder = output(env_home)
    return folder, snapshot(folder), folder.resolve()


@pytest.mark.parametrize("every_attempt", [False, True])
def test_a_dropped_connection_mid_extract_is_retried(published_large, source_db, env_home, every_attempt, monkeypatch):
    monkeypatch.setattr(extract, "MIN_TASK_WORK", 10**12)  # one task an attempt: one COPY to cut in each
    terminator = Terminator(source_db, every_attempt)
    terminator.start()
    try:
        result = run("export", FULL_REFRESH)
    finally:
        terminator.stop.set()
        terminator.join()
    attempts = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]
    if not every_attempt:
        assert result.success, failed_run_message(result)
        assert terminator.terminated == 1 and len(attempts) == 1
        assert published_files(output(env_home)) == expected_files(source_db, True)
    else:
        message = failure_message(result)
        # The cause: the server's reason, if its last message reached the task before the connection closed; a
        # reset may drop it, and then libpq's own (which one comes depends on the timing of the kill).
        assert "connection to Postgres lost" in message
        assert ("terminating connection due to administrator command" in message
                or "server closed the connection unexpectedly" in message), message
        assert terminator.terminated == 3 and len(attempts) == 2, "three attempts in all"
        assert_untouched(published_large)


@pytest.mark.command
def test_the_pool_keeps_populate_and_export_from_overlapping(populated_db, database_url, env_home, tmp_path):
    """Under the shipped instance config, a second run started while one holds the source database
    waits for the pool (Dagster says so in its log) instead of running alongside. The first run holds
    the pool for as long as this test holds a table lock it waits for: no race on who comes first."""
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:  # storage created once, not raced
        assert instance.event_log_storage.get_pool_config().default_pool_limit == 1
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    config = tmp_path / "populate.yaml"
    config.write_text("ops: {source_database: {config: {clients: 200, movements_per_card: [0, 5], seed: 5}}}")

    def wait_for(condition, processes) -> None:
        deadline = time.monotonic() + 180
        while not condition():
            assert all(p.poll() is None for p in processes), "a run ended before the pool was contended"
            assert time.monotonic() < deadline, "the pool was never contended"
            time.sleep(0.2)

    with dg.DagsterInstance.from_config(str(home)) as instance, psycopg.connect(database_url) as blocker:
        pool = lambda: instance.event_log_storage.get_concurrency_info("source_database")  # noqa: E731
        blocker.execute("LOCK TABLE sicooperative.associado IN ACCESS EXCLUSIVE MODE")
        first = start_dagster_cli("populate", "-c", str(config), env=env)
        wait_for(lambda: pool().active_slot_count == 1, [first])
        second = start_dagster_cli("populate", "-c", str(config), env=env)
        wait_for(lambda: pool().pending_step_count == 1, [first, second])
    # The lock is released: the first run loads, then the second takes the pool.
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert re.search(r"blocked by .*source_database|pool source_database", outputs[1], re.I), \
        "the second run waited for the pool"
