"""What runs by itself: a daily export (stopped by default) and the assets' automation conditions."""

import dagster as dg

from desafio_dagster.defs.jobs import export

# Off until someone turns it on (UI: Automation): the export publishes what the operational
# database holds at 03:00 UTC, including changes made outside Dagster, which no asset event records.
daily_export = dg.ScheduleDefinition(
    name="daily_export",
    job=export,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Run the export job every day at 03:00 UTC.",
)
# Evaluates the assets' automation conditions (movements_csv: after a populate). Running from the
# start wherever a Dagster daemon runs (the compose stack, `make ui`); the UI can stop it.
automation_conditions = dg.AutomationConditionSensorDefinition(
    "automation_conditions",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts the runs the assets' automation conditions ask for (movements_csv after its sources change).",
)
