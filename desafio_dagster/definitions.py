"""The one Definitions of the project: assets, checks, jobs, resources."""

import dagster as dg

from desafio_dagster import settings
from desafio_dagster.assets.movements import movements_csv
from desafio_dagster.assets.movements_checks import movements_csv_checks
from desafio_dagster.assets.source import RAW_TABLES, source_database
from desafio_dagster.assets.source_checks import source_database_checks
from desafio_dagster.io_managers.per_client_csv import PerClientCsvIOManager
from desafio_dagster.resources.postgres import PostgresResource
from desafio_dagster.resources.spark import SparkResource

# The steps run in order and share one Spark driver; one process per run avoids
# paying Python, Dagster and JVM start-up once per step.
_JOB_OPTIONS = {"executor_def": dg.in_process_executor}

populate = dg.define_asset_job(
    "populate",
    selection=dg.AssetSelection.assets(*RAW_TABLES),
    description="Generate the source database (the raw_* assets) and check it.",
    **_JOB_OPTIONS,
)
export = dg.define_asset_job(
    "export",
    selection=dg.AssetSelection.assets(movements_csv),
    description="Publish what Postgres holds now as one CSV per client, and check it against Postgres.",
    **_JOB_OPTIONS,
)
etl = dg.define_asset_job(
    "etl",
    selection=dg.AssetSelection.all(),
    description="populate, then export, in one run.",
    **_JOB_OPTIONS,
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
    jobs=[populate, export, etl],
    resources=resources,
)
