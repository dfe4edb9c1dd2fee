"""The crash-point matrix: an export killed with SIGKILL at each of its named steps (core/faults.py), each
time at exactly that step (no timing). After each kill a reader of the published output finds one complete,
audited version: the previous one until the swap, the new one from it. The next run cleans up and publishes
output byte-identical to an uninterrupted export of the same snapshot, and nothing is left behind."""

import os
import signal

import pyarrow as pa
import pytest

from desafio_dagster.core.audit import MANIFEST_FILE, audit, failures, parse_manifest
from desafio_dagster.core.faults import CRASH_VARIABLE, STEPS
from desafio_dagster.core.layout import INDEX_FILE, parse_index
from desafio_dagster.core.store import LocalStore
from desafio_dagster_tests.helpers import (
    FULL_REFRESH,
    expected_files,
    export,
    published_files,
    snapshot,
    start_dagster_cli,
)


@pytest.mark.command
@pytest.mark.parametrize("step", STEPS)
def test_a_run_killed_at_each_step_leaves_one_whole_version_and_the_next_run_publishes_the_uninterrupted_output(
        step, published, source, env_home, tmp_path):
    folder, before, first = published
    with source.connect() as conn:
        conn.execute("UPDATE associado SET sobrenome = sobrenome || ' Neto' WHERE id IN (5, 6)")
    process = start_dagster_cli("export", env={**os.environ, "DAGSTER_HOME": str(tmp_path), CRASH_VARIABLE: step})
    out, _ = process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL, out[-3000:]

    # What a reader finds: the previous version until the swap, the new one from it; whole and audited either way.
    if STEPS.index(step) < STEPS.index("publish"):
        assert folder.resolve() == first and snapshot(folder) == before
    else:
        assert folder.resolve() != first and published_files(folder) == expected_files(source, True)
    assert_whole_and_audited(folder)

    export()  # the next run
    after = snapshot(folder)
    assert published_files(folder) == expected_files(source, True)
    export(FULL_REFRESH)
    assert snapshot(folder) == after, "byte-identical to an uninterrupted export of the same snapshot"
    left = sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)
    assert not [name for name in left if not name.startswith((".movements_csv.v-", ".movements_csv.lock"))], left
    assert not list(folder.parent.glob(".movements_csv.v-*/.attempts")), "no task attempt left"


def assert_whole_and_audited(folder) -> None:
    """The published version as a reader finds it: every file its index names, no other, each read back from
    the disk and audited against the figures the version recorded of its snapshot."""
    store = LocalStore(folder.parent, folder.name)
    version = store.published()
    files = store.files(version).client_files()["file"].to_pylist()
    assert sorted(files) == sorted(parse_index(store.read(version, INDEX_FILE))["file"].to_pylist())
    scans = store.scan(version, files).add_column(0, "file", pa.array(files, pa.string()))
    assert failures(audit(scans, parse_manifest(store.read(version, MANIFEST_FILE)), masked=True)) == ""
