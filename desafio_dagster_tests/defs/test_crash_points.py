"""The crash-point matrix: an export killed with SIGKILL at each of its named steps (core/faults.py), each
time at exactly that step (no timing). After each kill a reader of the published output finds one complete,
audited version: the previous one until the swap, the new one from it. The next run cleans up and publishes
output byte-identical to an uninterrupted export of the same snapshot, and nothing is left behind. Locally the
swap is the link's rename; on S3 (moto's server) the pointer object written last."""

import os
import signal

import pytest

from desafio_dagster.core.faults import CRASH_VARIABLE, STEPS
from desafio_dagster.core.output.store import LocalStore, open_store
from desafio_dagster.core.settings import OutputLocation
from desafio_dagster_tests.helpers import FULL_REFRESH, expected_files, export, output, start_dagster_cli
from desafio_dagster_tests.readers import LocalReader, S3Reader, assert_whole_and_audited


@pytest.fixture(params=["local", "s3"])
def published_at(request, env_home, source):
    """A first export (full) to a local folder or to S3 (moto's server): (a reader of the output, the store)."""
    if request.param == "s3":
        s3 = request.getfixturevalue("s3")
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("DESAFIO_OUTPUT_DIR", s3.output_dir)
        export()
        return S3Reader(s3), open_store(OutputLocation(bucket=s3.bucket, prefix=s3.prefix), "movements_csv")
    export()
    return LocalReader(output(env_home)), LocalStore(env_home / "data", "movements_csv")


@pytest.mark.command
@pytest.mark.chaos(fault="SIGKILL of the export ({published_at})", where="step {step}",
                   outcome="a reader finds the old or the new version, whole; the next run cleans up")
@pytest.mark.parametrize("step", STEPS)
def test_a_run_killed_at_each_step_leaves_one_whole_version_and_the_next_run_publishes_the_uninterrupted_output(
        step, published_at, source, tmp_path):
    reader, store = published_at
    first, before = store.published(), reader.snapshot()
    with source.connect() as conn:
        conn.execute("UPDATE associado SET sobrenome = sobrenome || ' Neto' WHERE id IN (5, 6)")
    process = start_dagster_cli("export", env={**os.environ, "DAGSTER_HOME": str(tmp_path), CRASH_VARIABLE: step})
    out, _ = process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL, out[-3000:]

    # What a reader finds: the previous version until the swap, the new one from it; whole and audited either way.
    if STEPS.index(step) < STEPS.index("publish"):
        assert store.published() == first and reader.snapshot() == before
    else:
        assert store.published() != first and reader.published_files() == expected_files(source, True)
    assert_whole_and_audited(store)
    # On S3 a version being written holds a lease, deleted once it is published or discarded: the killed run's
    # is left, and other exports' cleanups spare its version until it lapses.
    leased = reader.leases()
    writing = isinstance(reader, S3Reader) and STEPS.index("snapshot") < STEPS.index(step) < STEPS.index("publish")
    assert len(leased) == (1 if writing else 0), leased

    export()  # the next run
    after = reader.snapshot()
    assert reader.published_files() == expected_files(source, True)
    assert reader.leases() == leased, "spared while its lease is live"
    reader.lapse_leases()  # the lease's time passes
    previous = store.published()
    export(FULL_REFRESH)
    assert reader.snapshot() == after, "byte-identical to an uninterrupted export of the same snapshot"
    reader.assert_nothing_left(store.published(), previous)
