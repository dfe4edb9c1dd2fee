"""movements_csv: the flat view of card movements, one CSV per client (Spark)."""

from concurrent.futures import ThreadPoolExecutor

import dagster as dg
from pydantic import Field
from pyspark.sql import DataFrame

from desafio_dagster.assets.source import RAW_TABLES
from desafio_dagster.dagster_utils import user_errors
from desafio_dagster.extract import snapshot_to_parquet
from desafio_dagster.resources.postgres import PostgresResource
from desafio_dagster.resources.spark import SparkResource
from desafio_dagster.transform import flat_view, read_snapshot


class MovementsCsvConfig(dg.Config):
    mask_card_numbers: bool = Field(
        default=True, description="Write card numbers as ************1234; false writes them in full"
    )


def _remove_stale_staging(context: dg.AssetExecutionContext, spark: SparkResource) -> None:
    """Staging left by runs that were killed or failed before publishing."""
    for run_id in spark.stale_run_ids():
        run = context.instance.get_run_by_id(run_id)
        if run_id != context.run.run_id and (run is None or run.is_finished):
            spark.staging(run_id).remove()


@dg.asset(
    deps=list(RAW_TABLES),
    kinds={"spark", "csv"},
    io_manager_key="csv_io_manager",
    group_name="export",
)
def movements_csv(
    context: dg.AssetExecutionContext, config: MovementsCsvConfig, postgres: PostgresResource, spark: SparkResource
) -> DataFrame:
    """One row per card movement with its card, account and client; one CSV file per client."""
    _remove_stale_staging(context, spark)
    with user_errors():
        db = postgres.database()
        staging = spark.staging(context.run.run_id)

        def progress(table: str, rows: int, seconds: float) -> None:
            context.log.info(f"extracted {table}: {rows:,} rows, {rows / max(seconds, 1e-9):,.0f} rows/s")

        context.log.info(f"starting Spark on {spark.master_url} while the source is staged at {staging.location}")
        with ThreadPoolExecutor(max_workers=1) as background:
            session = background.submit(spark.session)  # the JVM starts while Postgres is read
            counts = snapshot_to_parquet(db, staging, on_progress=progress)
            view = flat_view(read_snapshot(session.result(), staging), config.mask_card_numbers)
    context.add_output_metadata({f"source_{table}_rows": rows for table, rows in counts.items()}
                                | {"masked_card_numbers": config.mask_card_numbers})
    return view
