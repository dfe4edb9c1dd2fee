"""Named points of an export where a test can kill it: DESAFIO_CRASH_AT=<step> makes the process SIGKILL
itself when the export reaches that step, deterministically (no timing). Unset, as in every real run, a
step costs one environment lookup. Pure: no Dagster.

The steps, in order: snapshot (the source snapshot open, nothing written), tasks (every client file
stored by the Spark tasks, no record yet), records (the version's records written and durable, not
audited), audit (audited, not published), publish (published: the link or the pointer swapped, the older
versions not cleaned up), cleanup (cleaned up; the run has not reported the materialization)."""

import os
import signal

CRASH_VARIABLE = "DESAFIO_CRASH_AT"
STEPS = ("snapshot", "tasks", "records", "audit", "publish", "cleanup")


def reached(step: str) -> None:
    """The export reached step: killed here if DESAFIO_CRASH_AT names it."""
    if os.environ.get(CRASH_VARIABLE) == step:
        os.kill(os.getpid(), signal.SIGKILL)
