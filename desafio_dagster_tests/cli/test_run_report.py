"""The CLI's progress comes from the messages the steps log (desafio_dagster.core.progress): a run's
real event log must carry both kinds, and the report must draw them as bars."""

import io

import dagster as dg

from desafio_dagster.cli.run_report import RunReport, Screen
from desafio_dagster.core import progress
from desafio_dagster_tests.helpers import run


def test_a_runs_own_messages_drive_the_progress_bars(database_url, env_home):
    instance = dg.DagsterInstance.ephemeral()
    config = {"ops": {"source_database": {"config": {"clients": 30, "movements_per_card": [0, 4], "seed": 3}}}}
    result = run("etl", config, instance)
    assert result.success
    messages = [(entry.step_key, entry.user_message) for entry in instance.all_logs(result.run_id)
                if entry.dagster_event is None]
    parsed = {(step, found.unit) for step, message in messages if (found := progress.parse(message))}
    assert parsed == {("source_database", "rows"), ("movements_csv", "tasks")}, messages

    # Replayed into the report (the listener `make run` uses), they become bars.
    report = RunReport(Screen(io.StringIO()), expected_rows=10**9)
    for entry in instance.all_logs(result.run_id):
        report(entry)
    assert {step.outcome for step in report.steps.values()} == {"ok"}
    drawn = [report._progress_text(message) for _, message in messages if progress.parse(message)]
    assert any(text.endswith("rows") and text.startswith("[") for text in drawn), drawn
    assert any(text.endswith("Spark tasks writing files") and text.startswith("[") for text in drawn), drawn


def test_messages_round_trip():
    assert progress.parse(progress.rows_loaded(1_234_567, 2.0)) == progress.Progress("rows", 1_234_567)
    assert progress.parse(progress.tasks_done(3, 8, 12.4)) == progress.Progress("tasks", 3, 8)
    assert progress.parse("extracted movimento: 10 rows") is None


def test_a_job_that_ends_before_spark_reports_progress_still_reports_its_end():
    """Spark Connect sends progress every few seconds: a short job may end before it sends any."""
    from pyspark.sql.connect.shell.progress import StageInfo

    from desafio_dagster.core.export.publish import _Progress

    seen = []
    quiet = _Progress(lambda done, known, seconds: seen.append((done, known)))
    quiet.finished(3)
    assert seen == [(3, 3)]

    seen.clear()
    reported = _Progress(lambda done, known, seconds: seen.append((done, known)))
    reported([StageInfo(stage_id=1, num_tasks=3, num_completed_tasks=3, num_bytes_read=0, done=True)], 0, "op", True)
    reported.finished(3)
    assert seen == [(3, 3)], "reported once"
