"""movements_csv: the flat view of card movements, one CSV per client (Spark).

The asset says what to export: from the `postgres` resource's database, on the `spark` resource's engine, with
the run's config; it returns that request (core/export/flow.py's ExportRequest) and touches nothing. The per-client CSV
IO manager exports it: core.export.flow.export_movements takes the snapshot, plans, runs the Spark job, audits and
publishes in one place, and the IO manager records what it did as the materialization's metadata."""

import dagster as dg
from pydantic import Field

from desafio_dagster.core.export.flow import ExportRequest
from desafio_dagster.core.output.layout import CSV_CONTRACT
from desafio_dagster.defs.assets.source import RAW_TABLES, SOURCE_DATABASE_POOL
from desafio_dagster.defs.resources.postgres import PostgresResource
from desafio_dagster.defs.resources.spark import SparkResource
from desafio_dagster.defs.utils import TRANSIENT_RETRY_POLICY, user_errors


class MovementsCsvConfig(dg.Config):
    mask_card_numbers: bool = Field(
        default=True, description="Write card numbers as ************1234; false writes them in full"
    )
    full_refresh: bool = Field(
        default=False, description="Rewrite every client's file. By default only new or changed clients are "
                                   "rewritten and the other files are carried from the published version")
    clients: list[int] = Field(
        default=[], description="Client ids (associado.id) to rewrite whatever changed, e.g. [42, 7]; the "
                                "others are carried or rewritten as usual")


# The 11 columns of every client file (the output contract), shown in the UI before any run.
COLUMN_SCHEMA = dg.TableSchema(columns=[dg.TableColumn(name, type_, description=source)
                                        for name, (type_, source) in CSV_CONTRACT.items()])
# Bump when the extract, the flat view or the publication changes the files for the same source: the
# next export then rewrites every file (it is recorded in each version's _format.json).
CODE_VERSION = "1"
# Refreshed by the automation sensor when a run that did not materialize it (a populate) has
# updated a source table, once that run has finished and the sources' blocking checks passed;
# never while an export is queued or running. The pool `source_database` keeps it from overlapping
# a populate that starts later.
AFTER_SOURCE_CHANGES = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


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
def movements_csv(config: MovementsCsvConfig, postgres: PostgresResource, spark: SparkResource) -> ExportRequest:
    """One row per card movement with its card, account and client; one CSV file per client,
    published only once it matches the figures of the source snapshot it was read from. Only the
    clients that changed since the published version are read and written; the other files are
    carried over (see core/export/incremental.py)."""
    with user_errors():
        return ExportRequest(postgres.database(), spark.connected, config.mask_card_numbers, config.full_refresh,
                             tuple(config.clients), CODE_VERSION, postgres.max_export_connections)
