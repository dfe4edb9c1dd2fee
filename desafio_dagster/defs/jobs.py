"""The jobs: populate, export, etl (both, in order) and checks (the asset checks alone)."""

import dagster as dg

from desafio_dagster.defs.assets.movements import movements_csv
from desafio_dagster.defs.assets.source import RAW_TABLES

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
