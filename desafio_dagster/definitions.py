"""The one Definitions of the project: assets, checks, jobs, schedules, automation, resources."""

import atexit
import gc

import dagster as dg

from desafio_dagster.core import settings
from desafio_dagster.defs.assets.movements import movements_csv
from desafio_dagster.defs.assets.movements_checks import movements_csv_checks
from desafio_dagster.defs.assets.source import source_database
from desafio_dagster.defs.assets.source_checks import source_database_checks
from desafio_dagster.defs.io_managers.per_client_csv import PerClientCsvIOManager
from desafio_dagster.defs.jobs import checks, etl, export, grow, populate
from desafio_dagster.defs.resources.postgres import PostgresResource
from desafio_dagster.defs.resources.spark import SparkResource
from desafio_dagster.defs.schedules import automation_conditions, daily_export
from desafio_dagster.defs.utils import from_environment

spark = SparkResource(master=from_environment(settings.SPARK_MASTER))
resources = {
    "postgres": PostgresResource(url=from_environment(settings.POSTGRES_URL), home=from_environment(settings.HOME),
                                 schema_name=from_environment(settings.SCHEMA)),
    "spark": spark,
    "csv_io_manager": PerClientCsvIOManager(spark=spark, base_dir=from_environment(settings.OUTPUT_DIR)),
}
defs = dg.Definitions(
    assets=[source_database, movements_csv],
    asset_checks=[source_database_checks, movements_csv_checks],
    jobs=[populate, grow, export, etl, checks],
    schedules=[daily_export],
    sensors=[automation_conditions],
    resources=resources,
    # Every job, and the runs automation starts, runs its steps in order in one process that
    # shares one Spark driver: no Python, Dagster and JVM start-up per step.
    executor=dg.in_process_executor,
)

# At exit, Python's garbage collector walks every object left (Dagster's, the libraries'): 0.7 s of each
# `dagster job execute` here. Frozen at exit, they are left to the operating system instead: 0.05 s.
atexit.register(gc.freeze)
