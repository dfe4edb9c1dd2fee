"""The jobs: populate, grow (populate's assets, adding days instead of replacing), export, etl (populate
and export, in order) and checks (the asset checks alone)."""

import dagster as dg

from desafio_dagster.defs.assets.movements import movements_csv
from desafio_dagster.defs.assets.source import RAW_TABLES

populate = dg.define_asset_job(
    "populate",
    selection=dg.AssetSelection.assets(*RAW_TABLES),
    description="Generate the source database (the raw_* assets) and check it.",
)
grow = dg.define_asset_job(
    "grow",
    selection=dg.AssetSelection.assets(*RAW_TABLES),
    description="Add days of activity to the source database after its last day (default: 1 day), keeping every "
    "row it holds, and check it. The populate with add_days > 0: set add_days, seed, active_clients_per_day and "
    "new_clients_per_day in the launchpad.",
    config={"ops": {"source_database": {"config": {"add_days": 1}}}},
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
