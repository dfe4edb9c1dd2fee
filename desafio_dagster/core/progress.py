"""The progress messages the steps log and the CLI draws as progress bars: one format, written
and read here, so the two cannot drift apart."""

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """`done` of `total` units (`total` None: unknown) of a step's work."""

    unit: str
    done: int
    total: int | None = None


def rows_loaded(rows: int, seconds: float) -> str:
    """The populate's progress: rows copied into Postgres so far."""
    return f"{rows:,} rows loaded, {rows / max(seconds, 1e-9):,.0f} rows/s"


def tasks_done(done: int, tasks: int, seconds: float) -> str:
    """The export's progress: Spark tasks that finished writing their client files."""
    return f"writing client files: {done}/{tasks} Spark tasks done after {seconds:.0f} s"


_PATTERNS = (
    ("rows", re.compile(r"^([\d,]+) rows loaded, "), None),
    ("tasks", re.compile(r"^writing client files: (\d+)/(\d+) Spark tasks done"), 2),
)


def parse(message: str) -> Progress | None:
    """The Progress a message of rows_loaded or tasks_done carries; None for any other message."""
    for unit, pattern, total_group in _PATTERNS:
        found = pattern.match(message)
        if found:
            total = int(found.group(total_group)) if total_group else None
            return Progress(unit, int(found.group(1).replace(",", "")), total)
    return None


class Stopwatch:
    """Where a step's time went: `with watch("plan"): ...` adds the body's seconds to watch.seconds["plan"]."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.monotonic() - started

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
