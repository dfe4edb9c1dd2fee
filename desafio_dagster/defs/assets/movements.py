"""movements_csv: the flat view of card movements, one CSV per client (Spark)."""

import dagster as dg
from pydantic import Field

from desafio_dagster.core import faults
from desafio_dagster.core.extract import ExportedSnapshot, partitions_for
from desafio_dagster.core.incremental import file_format, plan_export, published_figures
from desafio_dagster.core.layout import CSV_CONTRACT
from desafio_dagster.core.progress import Stopwatch
from desafio_dagster.core.spark_session import task_slots
from desafio_dagster.core.transform import snapshot_view
from desafio_dagster.defs.assets.source import RAW_TABLES, SOURCE_DATABASE_POOL
from desafio_dagster.defs.io_managers.per_client_csv import ExportedView, PerClientCsvIOManager
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
def movements_csv(
    context: dg.AssetExecutionContext,
    config: MovementsCsvConfig,
    postgres: PostgresResource,
    spark: SparkResource,
    csv_io_manager: dg.ResourceParam[PerClientCsvIOManager],
) -> ExportedView:
    """One row per card movement with its card, account and client; one CSV file per client,
    published only once it matches the figures of the source snapshot it was read from. Only the
    clients that changed since the published version are read and written; the other files are
    carried over (see core/incremental.py)."""
    with user_errors():
        store = csv_io_manager.store(context.asset_key.path[-1])  # refuses an unsupported location first
        db = postgres.database()
        watch = Stopwatch()
        with watch("published_figures"):  # what the published version recorded of its source
            published = None if config.full_refresh else published_figures(store)
        exported = ExportedSnapshot.open(db, on_wait=context.log.warning, published=published)
        faults.reached("snapshot")
        watch.add("snapshot_figures", exported.snapshot.figures_seconds)
        try:
            snapshot = exported.snapshot
            with watch("plan"):
                plan = plan_export(store, snapshot.clients, file_format(CODE_VERSION, config.mask_card_numbers),
                                   config.full_refresh, config.clients, published)
            figured = (f"figures of the {snapshot.changed:,} clients the change journal names" if snapshot.changed
                       is not None else "figures of every client")
            context.log.info(f"snapshot {snapshot.id}: {snapshot.counts['associado']:,} clients, "
                             f"{snapshot.counts['movimento']:,} movements, {figured}; {plan.mode} export ({plan.reason}): "
                             f"{len(plan.rewrite):,} clients to write, {plan.carried:,} to carry, "
                             f"{len(plan.removed):,} to remove")
            view = None
            if len(plan.rewrite):  # else no Spark at all
                only = None if plan.mode == "full" else plan.rewrite
                movements = snapshot.movements(only)
                with watch("spark_start"):
                    connected = spark.connected()
                    slots = task_slots(connected.session)
                parts = partitions_for(movements, slots, postgres.max_export_connections)
                exported.check_connections(parts, slots)
                context.log.info(f"{connected.engine}: up to {parts} tasks read {movements:,} movements, "
                                 f"a range of clients each")
                context.add_output_metadata({"spark_engine": connected.engine})
                sealed = connected.seal({**db.task_environment(), **store.task_environment()})
                view = snapshot_view(connected.session, exported, parts, config.mask_card_numbers, only, sealed)
        except BaseException:
            exported.close()
            raise
    context.add_output_metadata({f"source_{table}_rows": rows for table, rows in snapshot.counts.items()})
    return ExportedView(view, exported, config.mask_card_numbers, plan, watch.seconds)
