"""Faults that are not crashes, each injected deterministically (by name, never by timing) through a proxy of the
test harness (fault_proxies.py) or a pause at a named step (core/faults.py): an object store answering with
errors, two exporters racing on one S3 prefix, a network between the tasks and Postgres that resets, stalls or
refuses, a Postgres server restarted mid-export, a full output disk. After each: the published output is one
complete, audited version, exactly the right files, and nothing is left half-published."""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from desafio_dagster.core.faults import CRASH_VARIABLE, PAUSE_VARIABLE
from desafio_dagster.core.output.store import open_store
from desafio_dagster.core.settings import OutputLocation
from desafio_dagster.core.source import loading
from desafio_dagster.core.source.embedded import embedded_pg_ctl
from desafio_dagster.core.source.fakedata import generate
from desafio_dagster.core.source.source_db import SourceDatabase
from desafio_dagster_tests.fault_proxies import HttpFaultProxy, PgFault, S3Call, TcpFaultProxy, always
from desafio_dagster_tests.helpers import (
    FULL_REFRESH,
    SPEC,
    assert_untouched,
    expected_files,
    export,
    failed_run_message,
    failure_message,
    output,
    published_files,
    run,
    snapshot,
    start_dagster_cli,
)
from desafio_dagster_tests.readers import S3Reader, assert_whole_and_audited

pytestmark = pytest.mark.chaos


@pytest.fixture
def on_s3(s3, env_home, monkeypatch):
    """DESAFIO_OUTPUT_DIR on moto's S3 server: (the server, a reader, the project's store of the output)."""
    monkeypatch.setenv("DESAFIO_OUTPUT_DIR", s3.output_dir)
    return s3, S3Reader(s3), open_store(OutputLocation(bucket=s3.bucket, prefix=s3.prefix), "movements_csv")


def _through(proxy: HttpFaultProxy, monkeypatch) -> None:
    """The export (its driver and, through its sealed settings, its Spark tasks) reaches S3 through proxy."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)


def _versions(s3) -> set[str]:
    base = f"{s3.prefix}/movements_csv/"
    return {key.removeprefix(base).partition("/")[0] for key in s3.keys(base) if "/" in key.removeprefix(base)}


def _step_attempts(result: dg.ExecuteInProcessResult) -> int:
    return 1 + sum(1 for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED)


def _changed(source) -> None:
    with source.connect() as conn:
        conn.execute("UPDATE associado SET sobrenome = sobrenome || ' Neto' WHERE id IN (5, 6)")


@pytest.mark.chaos(
    fault="S3: 503, 500, drops before and after the request applies, answers cut mid-body, slow answers",
    where="first attempt of every read and most writes; a full, then an incremental export",
    outcome="published; each fault absorbed by a retried request, no step retried")
def test_object_store_errors_resets_and_slow_answers_are_retried_and_exactly_the_right_files_published(
        on_s3, source, monkeypatch):
    s3, reader, store = on_s3
    with HttpFaultProxy(s3.endpoint, _fault_for, delay=0.5) as proxy:
        _through(proxy, monkeypatch)
        full, _ = export()
        assert reader.published_files() == expected_files(source, True)
        _changed(source)
        incremental, metadata = export()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    restarts = [e.message for result in (full, incremental) for e in result.all_events
                if e.event_type in (dg.DagsterEventType.STEP_RESTARTED, dg.DagsterEventType.STEP_UP_FOR_RETRY)]
    assert restarts == [], "each fault was absorbed by a retried request, not by a retried step"
    assert metadata["export_mode"] == "incremental" and reader.published_files() == expected_files(source, True)
    assert_whole_and_audited(store)
    assert set(proxy.injected) == {"503", "500", "reset", "lost", "cut", "slow"}, proxy.injected
    assert sum(proxy.injected.values()) >= 20, proxy.injected


def _fault_for(call: S3Call) -> str | None:
    """The first read of each object cut off halfway; on the first attempt of a write, one of each fault on the
    client files (by client id), and each export's conditional write of the pointer applied but its answer lost:
    the SDK's retry then finds the pointer changed, by this very export."""
    if call.method == "GET":
        return "cut" if call.seen == 1 else None
    if call.attempt > 1:
        return None
    if call.method == "PUT" and call.name == "_published":
        return "lost"
    if call.method == "PUT" and call.name[:8].isdigit():
        return ("503", "500", "reset", "lost", "slow", None)[int(call.name[:8]) % 6]
    return None


@pytest.mark.chaos(
    fault="S3: one client file's PUT always answers 503",
    where='that PUT, on every attempt',
    outcome='fails after 3 step attempts of 5 requests each; pointer unchanged; next run cleans up')
def test_a_put_that_always_fails_publishes_nothing_and_the_previous_version_stays_readable(on_s3, source, monkeypatch):
    s3, reader, _ = on_s3
    export()
    published, before, versions = s3.published(), reader.snapshot(), _versions(s3)
    file = sorted(expected_files(source, True))[7]
    with HttpFaultProxy(s3.endpoint, always("503", of=lambda call: call.method == "PUT" and call.name == file)) as proxy:
        _through(proxy, monkeypatch)
        result = run("export", FULL_REFRESH)
    message = failed_run_message(result)
    assert proxy.injected["503"] == 3 * 5, "5 attempts with backoff (the SDK's), in each of the step's 3 attempts"
    assert _step_attempts(result) == 3
    assert f"cannot write s3://{s3.bucket}/" in message and file in message and "SlowDown" in message, message
    assert "The store kept failing through every retry" in message and "; nothing was published" in message
    assert s3.published() == published and reader.snapshot() == before

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)  # the store answers again: the next run cleans up
    export()
    assert reader.published_files() == expected_files(source, True)
    assert _versions(s3) == {published, s3.published()}, "the failed version's files are gone"
    assert versions == {published}


@pytest.mark.chaos(
    fault="S3: the pointer's PUT always answers 500",
    where='the swap',
    outcome='fails after 3 step attempts; pointer unchanged; the unpublished versions removed')
def test_a_pointer_that_cannot_be_written_publishes_nothing_and_the_version_is_removed(on_s3, source, monkeypatch):
    s3, reader, _ = on_s3
    export()
    published, before, versions = s3.published(), reader.snapshot(), _versions(s3)
    _changed(source)
    plan = always("500", of=lambda call: call.method == "PUT" and call.name == "_published")
    with HttpFaultProxy(s3.endpoint, plan) as proxy:
        _through(proxy, monkeypatch)
        result = run("export")
    message = failed_run_message(result)
    assert proxy.injected["500"] == 3 * 5 and _step_attempts(result) == 3
    assert f"could not publish s3://{s3.bucket}/{s3.prefix}/movements_csv" in message and "InternalError" in message
    assert s3.published() == published and reader.snapshot() == before
    assert _versions(s3) == versions, "the unpublished version was removed"


@pytest.mark.command
@pytest.mark.chaos(
    fault='S3: two exporters on one prefix',
    where='one held after its audit while the other publishes',
    outcome='the held one fails clearly (its compare-and-swap loses) and removes its version')
def test_of_two_exporters_racing_on_one_prefix_exactly_one_publishes_and_the_other_removes_its_version(
        on_s3, source, tmp_path):
    """The pointer is a compare-and-swap: exporter A, held after its audit (before its swap), finds that B
    published meanwhile, publishes nothing and fails clearly. Two deployments, so no Dagster pool between them."""
    s3, reader, store = on_s3
    export()
    first = s3.published()
    _changed(source)  # work for both
    exporter_a, held = _exporter_held_at("audit", tmp_path / "a")
    try:
        export()  # exporter B
        by_b = s3.published()
        held.unlink()  # A goes on to its swap
        out, _ = exporter_a.communicate(timeout=300)
    finally:
        if exporter_a.poll() is None:
            exporter_a.kill()
    assert exporter_a.returncode != 0, out[-3000:]
    assert (f"another export published s3://{s3.bucket}/{s3.prefix}/movements_csv while this one ran (it now names "
            f"{by_b}, not {first})") in out, out[-3000:]
    assert "this run published nothing and removed its version" in out
    assert s3.published() == by_b and reader.published_files() == expected_files(source, True)
    assert_whole_and_audited(store)
    assert _versions(s3) <= {first, by_b}, "A's version is gone"


@pytest.mark.command
@pytest.mark.chaos(
    fault="S3: a rival export's cleanup while a version is written",
    where="one held once its tasks stored its files; the other cleans up, then is killed",
    outcome="the held one's files are spared (its lease) and it publishes; the killed one's go once its lease lapses")
def test_a_rival_exports_cleanup_spares_the_version_another_export_is_writing(on_s3, source, tmp_path):
    """Exporter A is held once its tasks stored its files; exporter B starts, cleans up leftover versions, and is
    killed at the same step. B's cleanup spares A's version, which holds a live lease: A's audit finds every file
    and A publishes. B's version, left with its lease, is removed by the first cleanup after the lease lapses."""
    s3, reader, store = on_s3
    export()
    first = s3.published()
    _changed(source)
    exporter_a, held = _exporter_held_at("tasks", tmp_path / "a")
    try:
        writing_a = reader.leases()
        (tmp_path / "b").mkdir()
        exporter_b = start_dagster_cli("export", env={**os.environ, "DAGSTER_HOME": str(tmp_path / "b"),
                                                      CRASH_VARIABLE: "tasks"})
        out_b, _ = exporter_b.communicate(timeout=300)
        assert exporter_b.returncode == -signal.SIGKILL, out_b[-3000:]
        held.unlink()  # A goes on: its records, its audit, its swap
        out_a, _ = exporter_a.communicate(timeout=300)
    finally:
        if exporter_a.poll() is None:
            exporter_a.kill()
    assert exporter_a.returncode == 0, out_a[-3000:]
    assert len(writing_a) == 1 and s3.published() not in (first, None)
    assert reader.published_files() == expected_files(source, True)
    assert_whole_and_audited(store)
    killed_b = reader.leases()
    assert len(killed_b) == 1 and killed_b != writing_a, "B's version, spared by A's cleanup while its lease is live"
    reader.lapse_leases()
    previous = s3.published()
    export(FULL_REFRESH)  # a run that publishes, and so cleans up (one that finds nothing changed leaves all as it is)
    assert not killed_b & _versions(s3)
    reader.assert_nothing_left(s3.published(), previous)


def _exporter_held_at(step: str, home: Path) -> tuple[subprocess.Popen, Path]:
    """An export in a `dagster job execute` process with a Dagster instance of its own (another deployment: no
    pool between it and the test's exports), held at step until the returned file is removed."""
    home.mkdir()
    held = home / f"held-at-{step}"
    process = start_dagster_cli("export", env={**os.environ, "DAGSTER_HOME": str(home), PAUSE_VARIABLE: f"{step}:{held}"})
    deadline = time.monotonic() + 300
    while not held.exists():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"the export never reached {step}"
        time.sleep(0.1)
    return process, held


@pytest.mark.chaos(
    fault='local: a swap from a version no longer published',
    where='the swap',
    outcome='refused, the link unchanged')
def test_a_local_publication_compares_the_link_before_it_swaps(tmp_path):
    """Locally the export holds the output's lock from its cleanup to its swap, so no rival can publish between;
    the swap still refuses to replace a version other than the one the export started from."""
    from desafio_dagster.core.output.store import LocalStore, PublishRaceLost

    store = LocalStore(tmp_path, "movements_csv")
    for name in ("a", "b", "c"):
        (tmp_path / store.version_name(name)).mkdir()
    store.publish(store.version_name("a"), replacing=None)
    store.publish(store.version_name("b"), replacing=store.version_name("a"))
    with pytest.raises(PublishRaceLost, match="it now names .movements_csv.v-b, not .movements_csv.v-a"):
        store.publish(store.version_name("c"), replacing=store.version_name("a"))
    assert store.published() == store.version_name("b")
    assert Path(tmp_path / "movements_csv").resolve().name == store.version_name("b")


# --- the network between the tasks and Postgres ---------------------------------------------------------


def _export_through(proxy: TcpFaultProxy, monkeypatch, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    monkeypatch.setenv("DESAFIO_POSTGRES_URL", proxy.url)
    return run("export", {**FULL_REFRESH, **(run_config or {})})


@pytest.mark.chaos(
    fault='Postgres network: a reset',
    where="a task's connection, after 4 KiB from the server (mid-COPY)",
    outcome='the step starts again from a fresh snapshot and publishes')
def test_a_connection_reset_mid_copy_is_retried_from_a_fresh_snapshot(published, source, database_url, env_home, monkeypatch):
    fault = PgFault("reset", after_bytes=4096, times=1)
    with TcpFaultProxy(database_url, fault) as proxy:
        result = _export_through(proxy, monkeypatch)
    assert result.success, failure_message(result)
    assert fault.hits == ["desafio_dagster export task"] and _step_attempts(result) == 2
    retried = [str(e.event_specific_data) for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retried) == 1 and "connection to Postgres lost in a Spark task reading" in retried[0], retried
    assert published_files(output(env_home)) == expected_files(source, True)


@pytest.mark.chaos(
    fault='Postgres network: a stall (open, nothing passes)',
    where="a task's connection, after 4 KiB from the server",
    outcome='given up after stall_timeout_seconds (10 s here), then as a reset')
def test_a_stalled_connection_is_given_up_after_the_stall_timeout_and_retried(published, source, database_url, env_home,
                                                                               monkeypatch):
    """The proxy keeps the connection open and passes nothing more: without the task's own bound the read would
    block for ever (libpq has no read timeout)."""
    fault = PgFault("stall", after_bytes=4096, times=1)
    config = {"resources": {"postgres": {"config": {"stall_timeout_seconds": 10}}}}
    started = time.monotonic()
    with TcpFaultProxy(database_url, fault) as proxy:
        result = _export_through(proxy, monkeypatch, config)
    assert result.success, failure_message(result)
    assert time.monotonic() - started < 150, "the stall is bounded (10 s, then a retry), never a hang"
    assert fault.hits == ["desafio_dagster export task"] and _step_attempts(result) == 2
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(failures) == 1
    assert "no data from Postgres for 10 s in a Spark task reading" in str(failures[0].event_specific_data), failures[0]
    assert published_files(output(env_home)) == expected_files(source, True)


@pytest.mark.chaos(
    fault="Postgres network: every task's connection refused",
    where='each connect of each attempt',
    outcome='fails clearly after 3 step attempts; previous output untouched')
def test_tasks_refused_by_the_network_fail_the_run_clearly_and_publish_nothing(published, database_url, monkeypatch):
    fault = PgFault("refuse", times=0)  # every task's connection, on every attempt
    with TcpFaultProxy(database_url, fault) as proxy:
        result = _export_through(proxy, monkeypatch)
    message = failed_run_message(result)
    assert _step_attempts(result) == 3 and len(fault.hits) >= 3
    assert "a Spark task: cannot connect to Postgres" in message and "the executors must reach the server" in message, message
    assert "; nothing was published" in message
    assert_untouched(published)


# --- Postgres restarted, the output disk full --------------------------------------------------------------


def _held_at(step: str, held: Path, monkeypatch, act) -> threading.Thread:
    """Hold the next export at step (DESAFIO_PAUSE_AT): a thread waits until it is held there, then runs act() and
    lets it go on (later attempts are not held). The export itself runs in the test's thread (Dagster's ephemeral
    instance is not to be shared between threads). Join the thread, then check its `error`."""
    monkeypatch.setenv(PAUSE_VARIABLE, f"{step}:{held}")

    def release():
        try:
            deadline = time.monotonic() + 300
            while not held.exists():
                assert time.monotonic() < deadline, f"the export never reached {step}"
                time.sleep(0.05)
            os.environ.pop(PAUSE_VARIABLE)
            act()
        except BaseException as error:  # shown by the test, not lost in the thread
            releaser.error = error
        finally:
            held.unlink(missing_ok=True)

    releaser = threading.Thread(target=release, daemon=True)
    releaser.error = None
    releaser.start()
    return releaser


@pytest.mark.parametrize(("step", "attempts"), [("snapshot", 2), ("tasks", 1)])
@pytest.mark.chaos(
    fault='Postgres restarted (pg_ctl restart -m fast)',
    where='step {step}',
    outcome='{attempts} step attempt(s), then published')
def test_postgres_restarted_mid_export_the_run_goes_on_or_retries_and_the_output_is_exact(
        step, attempts, private_server, env_home, monkeypatch, tmp_path):
    """Restarted with the snapshot open and nothing read: the export's own connection is gone, the step starts
    again from a fresh snapshot. Restarted once the tasks have read everything: the export publishes what it read."""
    home, url = private_server
    db = SourceDatabase(url, "sicooperative")
    loading.replace(db, generate(SPEC))
    monkeypatch.setenv("DESAFIO_POSTGRES_URL", url)
    export()
    _changed(db)
    releaser = _held_at(step, tmp_path / "held", monkeypatch,  # the export's own connection and snapshot go
                        lambda: embedded_pg_ctl(home, "-w", "-m", "fast", "restart"))
    result = run("export")
    releaser.join(300)
    assert not releaser.is_alive() and releaser.error is None, releaser.error
    assert result.success, failure_message(result)
    assert _step_attempts(result) == attempts
    if attempts > 1:
        retried = [str(e.event_specific_data) for e in result.all_events
                   if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
        assert len(retried) == 1 and "connection to Postgres lost" in retried[0], retried
    assert published_files(output(env_home)) == expected_files(db, True)


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of the test's own (64 MiB until the test shrinks it), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:  # never a skip: the full-disk fault is part of the suite
        pytest.fail(f"the full-disk test mounts a small tmpfs and could not: {mounted.stderr.strip()}. Run the tests "
                    f"as root with CAP_SYS_ADMIN (as CI does)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def _resize(disk: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


@pytest.mark.chaos(
    fault='local: the output disk full (a small tmpfs)',
    where="the tasks' writes of a full export",
    outcome='fails once, names the full disk and the fix; half-written version removed')
def test_a_full_output_disk_fails_clearly_and_leaves_the_previous_version_whole(source, small_disk, monkeypatch):
    monkeypatch.setenv("DESAFIO_OUTPUT_DIR", str(small_disk))
    export()
    folder = small_disk / "movements_csv"
    published = (folder, snapshot(folder), folder.resolve())
    disk = os.statvfs(small_disk)
    used = (disk.f_blocks - disk.f_bfree) * disk.f_frsize
    _resize(small_disk, used + used // 2)  # room for half of another version
    result = run("export", FULL_REFRESH)
    message = failed_run_message(result)
    assert "the output's disk is full (" in message and "No space left on device" in message, message
    assert "free space where DESAFIO_OUTPUT_DIR points" in message and _step_attempts(result) == 1
    assert_untouched(published)
    left = {p.name for p in small_disk.iterdir()} - {"movements_csv", ".movements_csv.lock"}
    assert left == {published[2].name}, "the failed version is gone (and a full export needs no twin to recycle)"

    _resize(small_disk, 64 * 1024 * 1024)
    export(FULL_REFRESH)
    assert published_files(folder) == expected_files(source, True)
