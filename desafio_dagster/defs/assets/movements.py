"""movements_csv: the flat view of card movements, one CSV per client (Spark)."""

from concurrent.futures import ThreadPoolExecutor

import dagster as dg
from pydantic import Field

from desafio_dagster.core.extract import snapshot_to_parquet
from desafio_dagster.core.layout import CSV_CONTRACT
from desafio_dagster.core.transform import flat_view, read_snapshot
from desafio_dagster.defs.assets.source import RAW_TABLES, SOURCE_DATABASE_POOL
from desafio_dagster.defs.io_managers.per_client_csv import ExportedView
from desafio_dagster.defs.resources.postgres import PostgresResource
from desafio_dagster.defs.resources.spark import SparkResource
from desafio_dagster.defs.utils import TRANSIENT_RETRY_POLICY, user_errors


class MovementsCsvConfig(dg.Config):
    mask_card_numbers: bool = Field(
        default=True, description="Write card numbers as ************1234; false writes them in full"
    )


# The 11 columns of every client file (the output contract), shown in the UI before any run.
COLUMN_SCHEMA = dg.TableSchema(columns=[dg.TableColumn(name, type_, description=source)
                                        for name, (type_, source) in CSV_CONTRACT.items()])
# Bump when the extract, the flat view or the publication changes the files for the same source.
CODE_VERSION = "1"
# Refreshed by the automation sensor when a run that did not materialize it (a populate) has
# updated a source table, once that run has finished and the sources' blocking checks passed;
# never while an export is queued or running. The pool `source_database` keeps it from overlapping
# a populate that starts later.
AFTER_SOURCE_CHANGES = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


def _run_finished(instance: dg.DagsterInstance, run_id: str) -> bool | None:
    """Whether a run has ended; None for a run this instance does not know."""
    run = instance.get_run_by_id(run_id)
    return None if run is None else run.is_finished


@dg.asset(
    deps=list(RAW_TABLES),
    kinds={"spark", "csv"},
    io_manager_key="csv_io_manager",
    group_name="export",
    metadata={"dagster/column_schema": COLUMN_SCHEMA},
    code_version=CODE_VERSION,
    automation_condition=AFTER_SOURCE_CHANGES,
    pool=SOURCE_DATABASE_POOL,
    retry_policy=TRANSIENT_RETRY_POLICY,
)
def movements_csv(
    context: dg.AssetExecutionContext, config: MovementsCsvConfig, postgres: PostgresResource, spark: SparkResource
) -> ExportedView:
    """One row per card movement with its card, account and client; one CSV file per client,
    published only once it matches the figures of the source snapshot it was read from."""
    with user_errors():
        spark.staging_area.remove_stale(context.run.run_id, lambda run_id: _run_finished(context.instance, run_id))
        db = postgres.database()
        staging = spark.staging_area.for_run(context.run.run_id)

        def progress(table: str, rows: int, seconds: float) -> None:
            context.log.info(f"extracted {table}: {rows:,} rows, {rows / max(seconds, 1e-9):,.0f} rows/s")

        context.log.info(f"starting Spark on {spark.master_url} while the source is staged at {staging.location}")
        spark.prepare_environment()
        with ThreadPoolExecutor(max_workers=1) as background:
            session = background.submit(spark.session)  # the JVM starts while Postgres is read
            snapshot = snapshot_to_parquet(db, staging, on_progress=progress, on_wait=context.log.warning)
            view = flat_view(read_snapshot(session.result(), staging), config.mask_card_numbers)
    context.add_output_metadata({f"source_{table}_rows": rows for table, rows in snapshot.counts.items()})
    return ExportedView(view, snapshot, config.mask_card_numbers)
