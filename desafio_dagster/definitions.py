"""The one Definitions of the project: assets, checks, jobs, schedules, automation, resources."""

import dagster as dg

from desafio_dagster import settings
from desafio_dagster.assets.movements import movements_csv
from desafio_dagster.assets.movements_checks import movements_csv_checks
from desafio_dagster.assets.source import RAW_TABLES, source_database
from desafio_dagster.assets.source_checks import source_database_checks
from desafio_dagster.io_managers.per_client_csv import PerClientCsvIOManager
from desafio_dagster.resources.postgres import PostgresResource
from desafio_dagster.resources.spark import SparkResource

populate = dg.define_asset_job(
    "populate",
    selection=dg.AssetSelection.assets(*RAW_TABLES),
    description="Generate the source database (the raw_* assets) and check it.",
)
export = dg.define_asset_job(
    "export",
    selection=dg.AssetSelection.assets(movements_csv),
    description="Publish what Postgres holds now as one CSV per client, and check it against Postgres.",
)
etl = dg.define_asset_job(
    "etl",
    selection=dg.AssetSelection.all(),
    description="populate, then export, in one run.",
)
checks = dg.define_asset_job(
    "checks",
    selection=dg.AssetSelection.all_asset_checks(),
    description="Only the asset checks: the source tables in Postgres, and the published files against the "
    "snapshot the latest export read. Materializes nothing; fails if a blocking check fails.",
)

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

# Every setting that comes from the environment is a dg.EnvVar, so the UI's resource page names the
# variable; unset variables take the README's defaults first.
settings.apply_defaults()
spark = SparkResource(master=dg.EnvVar("DESAFIO_SPARK_MASTER"), home=dg.EnvVar("DESAFIO_HOME"))
resources = {
    "postgres": PostgresResource(
        url=dg.EnvVar("DESAFIO_POSTGRES_URL"), home=dg.EnvVar("DESAFIO_HOME"), schema_name=dg.EnvVar("DESAFIO_SCHEMA")
    ),
    "spark": spark,
    "csv_io_manager": PerClientCsvIOManager(spark=spark, base_dir=dg.EnvVar("DESAFIO_OUTPUT_DIR")),
}
defs = dg.Definitions(
    assets=[source_database, movements_csv],
    asset_checks=[source_database_checks, movements_csv_checks],
    jobs=[populate, export, etl, checks],
    schedules=[daily_export],
    sensors=[automation_conditions],
    resources=resources,
    # Every job, and the runs automation starts, runs its steps in order in one process that
    # shares one Spark driver: no Python, Dagster and JVM start-up per step.
    executor=dg.in_process_executor,
)
