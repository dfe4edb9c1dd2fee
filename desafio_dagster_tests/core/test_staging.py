"""The staging area's lifecycle: what a run leaves behind is removed once it cannot be in use."""

import os
import time
import uuid

from desafio_dagster.core.staging import UNKNOWN_RUN_GRACE_SECONDS, StagingArea


def test_remove_stale_keeps_running_and_recent_unknown_runs(tmp_path):
    area = StagingArea(str(tmp_path / "staging"))
    current, running, finished, unknown_old, unknown_new = (str(uuid.uuid4()) for _ in range(5))
    for run_id in (current, running, finished, unknown_old, unknown_new):
        (tmp_path / "staging" / run_id / "movimento").mkdir(parents=True)
    (tmp_path / "staging" / "not-a-run").mkdir()
    old = time.time() - UNKNOWN_RUN_GRACE_SECONDS - 60
    os.utime(tmp_path / "staging" / unknown_old, (old, old))
    known = {running: False, finished: True}

    removed = area.remove_stale(current, known.get)

    assert sorted(removed) == sorted([finished, unknown_old])
    assert sorted(p.name for p in (tmp_path / "staging").iterdir()) == sorted([current, running, unknown_new, "not-a-run"])
    assert area.for_run(current).uri("movimento") == f"file://{tmp_path / 'staging' / current}/movimento"
