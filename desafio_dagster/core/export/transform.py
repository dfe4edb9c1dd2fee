"""The flat view of card movements. Pure: no Dagster.

One row per movement, joined movimento -> cartao -> conta -> associado, every contract column already
in its exact text format. A client without movements keeps one row whose movement columns are null,
so every client reaches the output.

The view is a Spark DataFrame with one partition per range of clients (extract.Snapshot.client_ranges).
Each task reads its range from all four tables of the export's snapshot (extract.read_clients) and
joins them there, in Arrow (`flat_rows`): a client's rows never leave its task, nothing is shuffled,
and nothing whose size grows with the number of clients is broadcast or held on the driver. Each
partition comes out sorted by client, then data_movimento, then movement id: the order of the files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from desafio_dagster.core.export.extract import Clients, ExportedSnapshot, read_clients
from desafio_dagster.core.output.layout import CSV_COLUMNS, masked
from desafio_dagster.core.spark.sealed import unseal_into_environment

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.connect.session import SparkSession

KEY_COLUMNS = ("client_id", "movement_id", "movement_time")
VIEW_SCHEMA = pa.schema([("client_id", pa.int64()), ("movement_id", pa.int64()), ("movement_time", pa.timestamp("us")),
                         *((name, pa.string()) for name in CSV_COLUMNS)])
VIEW_DDL = "client_id bigint, movement_id bigint, movement_time timestamp_ntz, " + ", ".join(
    f"`{name}` string" for name in CSV_COLUMNS)
_BATCH_ROWS = 65_536


def _text(timestamps: pa.ChunkedArray) -> pa.ChunkedArray:
    """YYYY-MM-DD HH:MM:SS, the fraction of a second dropped (Arrow's cast to text of whole seconds: 20x
    quicker than its strftime)."""
    return timestamps.cast(pa.timestamp("s"), safe=False).cast(pa.string())


def flat_rows(tables: dict[str, pa.Table], mask_card_numbers: bool = True) -> pa.Table:
    """The flat view (VIEW_SCHEMA) of the four tables' rows (extract.SOURCE_SCHEMAS), sorted by client,
    movement time and movement id; one row of null movement columns for each client without movements."""
    # Format the small tables before the join, so each card's and account's text is computed once.
    clients, accounts, cards, movements = (tables[t] for t in ("associado", "conta", "cartao", "movimento"))
    clients = pa.table({"client_id": clients["id"], "nome_associado": clients["nome"],
                        "sobrenome_associado": clients["sobrenome"],
                        "idade_associado": clients["idade"].cast(pa.string())})
    accounts = pa.table({"account_id": accounts["id"], "client_id": accounts["id_associado"],
                         "tipo_conta": accounts["tipo"], "data_criacao_conta": _text(accounts["data_criacao"])})
    cards = pa.table({"card_id": cards["id"], "account_id": cards["id_conta"],
                      "numero_cartao": masked(cards["num_cartao"]) if mask_card_numbers else cards["num_cartao"],
                      "nome_impresso_cartao": cards["nom_impresso"], "data_criacao_cartao": _text(cards["data_criacao"])})
    movements = pa.table({"movement_id": movements["id"], "card_id": movements["id_cartao"],
                          "vlr_transacao_movimento": movements["vlr_transacao"].cast(pa.string()),
                          "des_transacao_movimento": movements["des_transacao"],
                          "data_movimento": _text(movements["data_movimento"]),
                          "movement_time": movements["data_movimento"]})
    joined = (movements.join(cards, "card_id", use_threads=False).join(accounts, "account_id", use_threads=False)
              .join(clients, "client_id", use_threads=False))
    idle = clients.filter(pc.invert(pc.is_in(clients["client_id"], value_set=joined["client_id"].unique())))
    header_only = pa.table({
        "client_id": idle["client_id"], "movement_id": pa.nulls(len(idle), pa.int64()),
        "movement_time": pa.nulls(len(idle), pa.timestamp("us")), **{c: idle[c] for c in CSV_COLUMNS[:3]},
        **{c: pa.nulls(len(idle), pa.string()) for c in CSV_COLUMNS[3:]}})
    rows = pa.concat_tables([joined.select(VIEW_SCHEMA.names).cast(VIEW_SCHEMA), header_only.cast(VIEW_SCHEMA)])
    order = pc.sort_indices(rows, [(key, "ascending") for key in ("client_id", "movement_time", "movement_id")])
    return rows.take(order)  # 4x quicker here than rows.sort_by


@dataclass(frozen=True)
class RangeReader:
    """What a Spark task needs to make its part of the view (picklable: options, ranges, a flag, and the
    credentials sealed: sealed.py)."""

    options: dict[str, str]  # ExportedSnapshot.read_options
    ranges: list[Clients]
    mask_card_numbers: bool
    sealed: str = ""  # the tasks' environment (the password, the AWS credentials), sealed

    def read_and_join(self, indexes: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """mapInArrow function: the task's credentials opened, then joined(indexes)."""
        unseal_into_environment(self.sealed)
        return self.joined(indexes)

    def joined(self, indexes: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The flat view of the ranges whose indexes the batches hold (SnapshotView.indexes), each read from
        the snapshot and joined. Runs in a Spark task whose credentials are open."""
        for batch in indexes:
            for index in batch.column(0).to_pylist():
                rows = flat_rows(read_clients(self.options, self.ranges[index]), self.mask_card_numbers)
                yield from rows.to_batches(_BATCH_ROWS)


@dataclass(frozen=True)
class SnapshotView:
    """The flat view of an export's snapshot: one Spark partition per range of clients. publish.py runs
    each task's read, join and write in one Python function (no round trip of the rows through the JVM);
    frame() is the same view as a DataFrame, for anything else."""

    spark: SparkSession
    reader: RangeReader

    @property
    def partitions(self) -> int:
        return len(self.reader.ranges)

    def indexes(self) -> DataFrame:
        """One row per partition: the index of the range its task reads."""
        return self.spark.range(0, self.partitions, 1, self.partitions)

    def frame(self) -> DataFrame:
        return self.indexes().mapInArrow(self.reader.read_and_join, VIEW_DDL)


def snapshot_view(spark: SparkSession, exported: ExportedSnapshot, parts: int, mask_card_numbers: bool = True,
                  only: pa.Array | None = None, sealed: str = "") -> SnapshotView:
    """The flat view of the export's snapshot (of the clients in `only`, if given), in at most `parts`
    ranges of clients about equal in work (movements and files), one partition each. Nothing else is read. sealed: the
    tasks' credentials (Connected.seal)."""
    ranges = exported.snapshot.client_ranges(parts, only)
    return SnapshotView(spark, RangeReader(exported.read_options(), ranges, mask_card_numbers, sealed))
