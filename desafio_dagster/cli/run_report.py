"""What a person sees while `make run` runs: one line per step with its progress, then a summary.

RunReport listens to a run's Dagster events (the same entries the event log stores) and keeps
what the summary needs; Screen draws a status line in place on a terminal and prints plain,
throttled lines elsewhere (CI logs, pipes).
"""

import logging
import os
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from dagster import DagsterEventType, EventLogEntry, MetadataValue

from desafio_dagster.core import progress
from desafio_dagster.defs import metadata as meta

if TYPE_CHECKING:  # Dagster's type of an event's error; not part of its public API, so only for the checker
    from dagster._utils.error import SerializableErrorInfo

# Step keys of the jobs, as a person names them; other steps show their key.
STEP_LABELS = {
    "source_database": "populate",
    "source_database_checks": "check source",
    "movements_csv": "export",
    "movements_csv_checks": "check export",
}
_TEXT = 44  # width of a step line's text: the line fits 80 columns


def bar(fraction: float, width: int = 12) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def seconds(value: float) -> str:
    if value < 59.95:
        return f"{value:.1f} s"
    whole = round(value)
    return f"{whole // 60} min {whole % 60:02d} s"


class Screen:
    """Finished lines, plus one status line: redrawn in place on a terminal, else printed
    as a line at most every `every` seconds."""

    def __init__(self, stream: TextIO, every: float = 10.0):
        self.stream, self.every = stream, every
        self.live = stream.isatty()
        self._status = False
        self._last_line = time.monotonic()
        self._lock = threading.RLock()

    def _width(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 100  # 0: size not set
        except (OSError, ValueError):
            return 100

    def line(self, text: str = "") -> None:
        with self._lock:
            if self._status:
                self.stream.write("\r\x1b[K")
                self._status = False
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last_line = time.monotonic()

    def status(self, text: str) -> None:
        with self._lock:
            if self.live:
                self.stream.write("\r\x1b[K" + text[: self._width() - 1])
                self.stream.flush()
                self._status = True
            elif time.monotonic() - self._last_line >= self.every:
                self.line(text)


@dataclass
class Step:
    key: str
    started: float  # event timestamps (epoch seconds)
    ended: float | None = None
    outcome: str = "running"  # ok | FAILED | skipped | not run
    progress: str = "running"
    assets: dict[str, dict] = field(default_factory=dict)  # asset name -> materialization metadata
    checks: list[tuple[str, bool]] = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str:
        return STEP_LABELS.get(self.key, self.key)

    @property
    def duration(self) -> float:
        return (self.ended or time.time()) - self.started

    def detail(self) -> str:
        if self.checks:
            failed = [name for name, passed in self.checks if not passed]
            text = f"{len(self.checks) - len(failed)} of {len(self.checks)} checks passed"
            return text + (f"; failed: {', '.join(failed)}" if failed else "")
        rows = sum(metadata.get(meta.ROW_COUNT, 0) for metadata in self.assets.values())
        clients = sum(metadata.get(meta.CLIENTS, 0) for metadata in self.assets.values())
        if clients:
            return f"{rows:,} rows in {clients:,} client files"
        if any("growth" in metadata for metadata in self.assets.values()):
            added = sum(metadata.get(meta.ROWS_ADDED, 0) for metadata in self.assets.values())
            return f"{added:,} rows added, {rows:,} in {len(self.assets)} tables"
        if self.assets:
            return f"{rows:,} rows in {len(self.assets)} table{'s' if len(self.assets) > 1 else ''}"
        return "failed: see below" if self.outcome == "FAILED" else ""

    def line(self, text: str, mark: str, elapsed: float | None) -> str:
        return f"  {mark:<7} {self.label:<13} {text:<{_TEXT}} {seconds(elapsed) if elapsed is not None else '':>8}".rstrip()


def _values(metadata: Mapping[str, Any]) -> dict:
    return {key: value.value if isinstance(value, MetadataValue) else value for key, value in metadata.items()}


def error_text(error: "SerializableErrorInfo") -> str:
    """The innermost cause of a SerializableErrorInfo: what the user's code said."""
    while error.cause is not None:
        error = error.cause
    return "interrupted" if error.cls_name == "DagsterExecutionInterruptedError" else error.message.strip()


class RunReport:
    """An event listener for one run (DagsterInstance.add_event_listener): steps, their
    materializations and checks, drawn on a Screen as they happen."""

    def __init__(self, screen: Screen, expected_rows: int | None = None):
        self.screen, self.expected_rows = screen, expected_rows
        self.steps: dict[str, Step] = {}
        self.run_error: str | None = None
        self._current: Step | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)

    def __enter__(self) -> "RunReport":
        if self.screen.live:  # keeps the elapsed time moving while a step is quiet
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                self._draw_progress()

    def __call__(self, entry: EventLogEntry) -> None:
        try:
            with self._lock:
                self._handle(entry)
        except Exception:  # a display bug must never fail the run; the log keeps the traceback
            traceback.print_exc()

    def _handle(self, entry: EventLogEntry) -> None:
        event = entry.dagster_event
        step = self.steps.get(entry.step_key) if entry.step_key else None
        if event is None:  # a message the assets log (context.log)
            if step is not None and isinstance(entry.level, int) and entry.level >= logging.WARNING:  # always shown
                self.screen.line(f"  {step.label}: {entry.user_message}")
            elif step is not None:
                step.progress = self._progress_text(entry.user_message)
                self._draw_progress()
            return
        kind = event.event_type
        if kind == DagsterEventType.STEP_START and entry.step_key:
            self._current = self.steps[entry.step_key] = Step(entry.step_key, entry.timestamp)
            self._draw_progress()
        elif kind == DagsterEventType.ASSET_MATERIALIZATION and step is not None:
            materialization = event.step_materialization_data.materialization
            step.assets[materialization.asset_key.path[-1]] = _values(materialization.metadata)
        elif kind == DagsterEventType.ASSET_CHECK_EVALUATION and step is not None:
            evaluation = event.asset_check_evaluation_data
            step.checks.append((evaluation.check_name, evaluation.passed))
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE) and step is not None:
            step.ended, step.outcome = entry.timestamp, "ok" if kind == DagsterEventType.STEP_SUCCESS else "FAILED"
            if kind == DagsterEventType.STEP_FAILURE:
                failure = event.step_failure_data
                user = failure.user_failure_data
                step.error = user.description if user and user.description else (
                    error_text(failure.error) if failure.error else entry.message)
            self.screen.line(step.line(step.detail(), step.outcome, step.duration))
        elif kind == DagsterEventType.STEP_SKIPPED and entry.step_key:
            skipped = self.steps.setdefault(entry.step_key, Step(entry.step_key, entry.timestamp, entry.timestamp))
            skipped.outcome = "skipped"
            self.screen.line(skipped.line("", "skipped", None))
        elif kind == DagsterEventType.RUN_FAILURE:
            data = event.job_failure_data
            self.run_error = error_text(data.error) if data and data.error else entry.message

    def _progress_text(self, message: str) -> str:
        """A progress bar for the messages of desafio_dagster.core.progress; any other message as it is."""
        found = progress.parse(message)
        if found is None:
            return message
        if found.unit == "rows" and self.expected_rows:
            rows = found.done
            return f"{bar(min(rows / self.expected_rows, 0.99))} {rows:,} of ~{self.expected_rows:,} rows"
        if found.unit == "tasks" and found.total is not None:
            return f"{bar(found.done / max(found.total, 1))} {found.done}/{found.total} Spark tasks writing files"
        return message

    def _draw_progress(self) -> None:
        step = self._current
        if step is not None and step.outcome == "running":
            text = step.progress if len(step.progress) <= _TEXT else step.progress[: _TEXT - 3] + "..."
            self.screen.status(step.line(text, "..", step.duration))

    def not_run(self, step_keys: Iterable[str]) -> None:
        """A line for each step of the job that never started."""
        with self._lock:
            for key in step_keys:
                if key not in self.steps:
                    step = self.steps[key] = Step(key, time.time(), time.time(), "not run")
                    self.screen.line(step.line("", step.outcome, None))

    def failure(self) -> str:
        """What failed and why, in a few lines."""
        failed = [step for step in self.steps.values() if step.outcome == "FAILED"]
        if failed:
            return "\n".join(f"{step.label}{f' ({step.key})' if step.label != step.key else ''} failed: {step.error}"
                             for step in failed)
        return self.run_error or "the run failed before any step ran"

    def metadata(self, asset: str) -> dict:
        return next((step.assets[asset] for step in self.steps.values() if asset in step.assets), {})
