"""The project's Spark Connect server: started on first use, reused while it runs as asked, replaced when its
settings changed or it died, never another checkout's, and reachable only with its token."""

import os
import shutil
import signal
import tempfile
import time

import pytest

from desafio_dagster.core.spark.connect_server import running_server, state_dir, stop_server
from desafio_dagster.core.spark.spark_session import SparkStartError, connect, project_server
from desafio_dagster_tests.helpers import exited, ignores


@pytest.fixture
def homes(tmp_path):
    """Two DESAFIO_HOMEs (two checkouts); their servers are stopped afterwards."""
    first, second = tmp_path / "first", tmp_path / "second"
    yield first, second
    for home in (first, second):
        stop_server(home)


@pytest.mark.command
def test_a_server_is_reused_while_it_runs_as_asked_and_replaced_when_not(homes):
    home = homes[0]
    server = project_server("local[1]", home=home)
    assert project_server("local[1]", home=home).pid == server.pid, "the running server is reused"

    changed = project_server("local[1]", {"spark.driver.memory": "1g"}, home=home)
    assert changed.pid != server.pid and exited(server.pid), "another static setting: a new server, the old one stopped"

    os.kill(changed.pid, signal.SIGKILL)  # crashed
    while not exited(changed.pid):
        time.sleep(0.05)
    replaced = project_server("local[1]", {"spark.driver.memory": "1g"}, home=home)
    assert replaced.pid != changed.pid and running_server(home) == replaced.pid
    assert (state_dir(home) / "server.json").stat().st_mode & 0o777 == 0o600, "it holds the token and the key"


@pytest.mark.command
def test_a_server_started_by_a_run_that_ignores_sigterm_does_not_ignore_it(homes):
    """A run started in a shell's background ignores SIGINT, and Dagster gives SIGTERM SIGINT's handler: SIG_IGN.
    The server it starts must not inherit that (its JVM would never stop on SIGTERM: docker stop, stop_server)."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        server = project_server("local[1]", home=homes[0])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not ignores(server.pid, signal.SIGTERM), "the server's JVM inherited the run's ignored SIGTERM"


@pytest.mark.command
def test_another_checkouts_server_is_never_used_nor_stopped(homes):
    first, second = homes
    theirs = project_server("local[1]", home=first)
    # The second checkout finds the first one's record (copied, say): its process is not the second's server.
    state_dir(second).mkdir(parents=True)
    shutil.copy(state_dir(first) / "server.json", state_dir(second) / "server.json")
    ours = project_server("local[1]", home=second)
    assert ours.pid != theirs.pid and ours.url != theirs.url
    assert running_server(first) == theirs.pid, "the other checkout's server still runs"


def test_a_server_answers_only_with_its_token(spark_server, monkeypatch):
    monkeypatch.setenv("SPARK_CONNECT_AUTHENTICATE_TOKEN", "not-the-token")
    with pytest.raises(SparkStartError, match="cannot open a Spark Connect session at sc://localhost"):
        connect(spark_server.url)


def test_two_sessions_on_one_server_are_isolated(spark_server):
    first, second = connect(spark_server.url), connect(spark_server.url)
    try:
        assert first.slot != second.slot
        first.session.conf.set("spark.sql.shuffle.partitions", "3")
        assert second.session.conf.get("spark.sql.shuffle.partitions") != "3"
        first.session.range(3).createOrReplaceTempView("only_in_the_first")
        assert [t.name for t in second.session.catalog.listTables()] == []
    finally:
        first.close()
        second.close()


def test_a_reattached_session_starts_from_the_servers_settings_and_views(spark_server, tmp_path, monkeypatch):
    """A slot's session is reused by the next run: what the last run set or made is gone first."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # slots of this test's own
    connected = connect(spark_server.url, {"spark.sql.execution.arrow.maxRecordsPerBatch": "20"})
    connected.session.range(3).createOrReplaceTempView("left_behind")
    session_id = connected.session.client._session_id
    connected.close()
    again = connect(spark_server.url)
    try:
        assert again.session.client._session_id == session_id, "the same slot, the same (warm) session"
        assert again.session.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == "10000"
        assert again.session.catalog.listTables() == []
    finally:
        again.close()
