"""Named points of an export where a test can kill it or hold it: DESAFIO_CRASH_AT=<step> makes the process
SIGKILL itself when the export reaches that step; DESAFIO_PAUSE_AT=<step>:<file> makes it create file there and
wait until the file is removed (a test then acts at exactly that step: restarts a server, runs a rival export).
Deterministic, no timing. Unset, as in every real run, a step costs two environment lookups. Pure: no Dagster.

The steps, in order: snapshot (the source snapshot open, nothing written), tasks (every client file
stored by the Spark tasks, no record yet), records (the version's records written and durable, not
audited), audit (audited, not published), publish (published: the link or the pointer swapped, the older
versions not cleaned up), cleanup (cleaned up; the run has not reported the materialization)."""

import os
import signal
import time
from pathlib import Path

CRASH_VARIABLE = "DESAFIO_CRASH_AT"
PAUSE_VARIABLE = "DESAFIO_PAUSE_AT"
STEPS = ("snapshot", "tasks", "records", "audit", "publish", "cleanup")


def reached(step: str) -> None:
    """The export reached step: killed here if DESAFIO_CRASH_AT names it, held if DESAFIO_PAUSE_AT does."""
    if os.environ.get(CRASH_VARIABLE) == step:
        os.kill(os.getpid(), signal.SIGKILL)
    paused_at, _, file = os.environ.get(PAUSE_VARIABLE, "").partition(":")
    if paused_at == step:
        held = Path(file)
        held.touch()
        while held.exists():
            time.sleep(0.05)
