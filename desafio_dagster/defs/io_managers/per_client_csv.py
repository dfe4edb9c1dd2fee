"""Exports movements_csv's request (core/export/flow.py) as one CSV per client under DESAFIO_OUTPUT_DIR/<asset name>/
(a local folder or s3://bucket/prefix: core/output/store.py) through write–audit–publish, records what the export did as
the materialization's metadata, and loads the published files back as a Spark DataFrame for downstream assets."""

import math

import dagster as dg
import numpy as np
from pydantic import Field
from pyspark.sql import DataFrame

from desafio_dagster.core import settings
from desafio_dagster.core.export.flow import ExportRequest, export_movements
from desafio_dagster.core.export.publish import read_published
from desafio_dagster.core.output.s3 import AWS_VARIABLES
from desafio_dagster.core.output.store import Store, open_store
from desafio_dagster.core.output.version import MANIFEST_FILE, manifest_sha256
from desafio_dagster.defs import metadata as meta
from desafio_dagster.defs.resources.spark import SparkResource
from desafio_dagster.defs.utils import metadata_table, user_errors

# (label, most rows in the band), in order; the last band has no upper bound.
_BANDS = (("0", 0), ("1-10", 10), ("11-50", 50), ("51-100", 100), ("101-250", 250), ("251-500", 500), ("501+", None))
_BAR_WIDTH = 20
HISTOGRAM_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("rows_per_file", "text"), dg.TableColumn("clients", "int"),
    dg.TableColumn("share", "text", description="bar scaled to the largest band; percentage of all clients")])
TOP_CLIENTS_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("client_id", "int"), dg.TableColumn("file", "text"), dg.TableColumn("rows", "int")])


def rows_histogram(rows: np.ndarray) -> list[dict]:
    """Clients per band of rows per file (rows: each client's), every band in order, with a bar scaled to
    the largest band."""
    bounds = [most for _, most in _BANDS if most is not None]
    counts = np.bincount(np.searchsorted(bounds, rows, side="left"), minlength=len(_BANDS))
    largest, total = max(int(counts.max()), 1), max(len(rows), 1)
    return [{"rows_per_file": label, "clients": int(count),
             "share": f"{'█' * math.ceil(_BAR_WIDTH * count / largest)} {100 * count / total:.1f}%".lstrip()}
            for (label, _), count in zip(_BANDS, counts)]


class PerClientCsvIOManager(dg.ConfigurableIOManager):
    """One CSV file per client (the output contract in the README) plus _index.csv and the export's records."""

    base_dir: str = Field(default="", description=settings.OUTPUT_DIR.describe())
    spark: dg.ResourceDependency[SparkResource]
    top_clients: int = Field(default=10, description="Clients listed in the metadata, by rows")
    s3_environment: list[str] = Field(
        default=list(AWS_VARIABLES),
        description="With an s3:// output: the standard AWS variables read from the environment of the run (and "
                    "passed to Spark's executors, secrets redacted by Spark) for the credentials, region and "
                    "endpoint. Only their names are shown here, never their values")

    def store(self, asset_name: str) -> Store:
        """Where an asset's versions live and which one is published. Raises SettingError for an output
        location that is not supported, before anything is written."""
        return open_store(settings.output_location(self.base_dir), asset_name)

    def handle_output(self, context: dg.OutputContext, obj: ExportRequest) -> None:
        with user_errors():
            store = self.store(context.asset_key.path[-1])  # refuses an unsupported location before anything runs
            done = export_movements(obj, store, context.log.info, context.log.warning)
        published, plan, snapshot = done.published, done.plan, done.snapshot
        index = published.index
        rows = index["rows"].to_numpy()
        top = index.take(np.lexsort((index["client_id"].to_numpy(), -rows))[: self.top_clients])
        context.add_output_metadata({
            meta.PATH: dg.MetadataValue.path(published.path),
            meta.VERSION: dg.MetadataValue.path(published.version),
            meta.ROW_COUNT: published.rows,
            # What this export did: "full", "incremental", or "unchanged" (nothing new was published).
            meta.EXPORT_MODE: plan.mode,
            meta.EXPORT_REASON: plan.reason,
            meta.CLIENTS_REWRITTEN: published.rewritten,
            meta.CLIENTS_CARRIED: published.carried,
            meta.CLIENTS_REMOVED: published.removed,
            # The version whose files this run wrote: the checks read those back ("" when none).
            meta.WRITTEN_IN: published.version_name if published.rewritten else "",
            meta.CLIENTS: len(index),  # one file each
            "clients_without_movements": int((rows == 0).sum()),
            "top_clients_by_rows": metadata_table(top.select(["client_id", "file", "rows"]).to_pylist(),
                                                  TOP_CLIENTS_SCHEMA),
            "rows_per_client_histogram": metadata_table(rows_histogram(rows), HISTOGRAM_SCHEMA),
            # What the checks judge the published files against: this run's own snapshot.
            meta.MASKED_CARD_NUMBERS: obj.masked,
            meta.MANIFEST_SHA256: manifest_sha256(store.read_record(published.version_name, MANIFEST_FILE)),
            meta.SOURCE_FINGERPRINT: dg.MetadataValue.json(snapshot.fingerprint),
            # The source snapshot, where the source keeps a change journal: the checks ask it what changed since.
            meta.SOURCE_SNAPSHOT: snapshot.source or "",
            # Clients whose figures came from the journal's changes (the others' from the published version).
            "clients_figured": len(snapshot.clients) if snapshot.changed is None else snapshot.changed,
            "audit": dg.MetadataValue.json({f.rule: f.detail if not f.passed else "passed" for f in published.audit}
                                           if published.audit else "nothing published: no client changed"),
            # Where the export's time went, by phase: the snapshot's figures (SQL, with the fingerprints), the
            # plan, Spark's start, the Spark job (its tasks' writing, syncing and reading back summed over
            # the tasks, which run in parallel), then the driver's carrying, records, listing, audit,
            # publication and cleanup.
            "export_seconds": dg.MetadataValue.json({phase: round(seconds, 3) for phase, seconds in done.seconds.items()}),
            **({meta.SPARK_ENGINE: done.engine} if done.engine else {}),
            **{meta.SOURCE_ROWS.format(table=table): rows for table, rows in snapshot.counts.items()},
        })
        if published.cleanup_failed:
            context.log.warning(f"published, but older versions could not be removed ({published.cleanup_failed}); "
                                f"the next export removes them")
        if done.journal_kept:
            context.log.warning(f"published, but the change journal's rows this export saw could not be removed "
                                f"({done.journal_kept}); the next export removes them")
        if plan.mode == "unchanged":
            context.log.info(f"no client changed: {published.path} stays as it was ({published.version_name})")
        else:
            context.log.info(f"audited and published {published.rows:,} rows in {len(index):,} files at "
                             f"{published.path}: {published.rewritten:,} written, {published.carried:,} carried, "
                             f"{published.removed:,} removed")

    def load_input(self, context: dg.InputContext) -> DataFrame:
        with user_errors():
            store = self.store(context.asset_key.path[-1])  # the upstream asset's
            connected = self.spark.connected()
            return read_published(connected.session, store, sealed=connected.seal(store.task_environment()))
