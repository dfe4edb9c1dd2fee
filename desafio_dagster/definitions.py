"""The one Definitions of the project: assets, checks, jobs, resources."""

import dagster as dg

from desafio_dagster.assets.source import RAW_TABLES, source_database
from desafio_dagster.assets.source_checks import source_database_checks
from desafio_dagster.resources.postgres import PostgresResource

populate = dg.define_asset_job(
    "populate",
    selection=dg.AssetSelection.assets(*RAW_TABLES),
    description="Generate the source database (the raw_* assets) and check it.",
    executor_def=dg.in_process_executor,
)

defs = dg.Definitions(
    assets=[source_database],
    asset_checks=[source_database_checks],
    jobs=[populate],
    resources={"postgres": PostgresResource()},
)
