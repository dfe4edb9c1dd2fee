"""The flat view of card movements, in Spark. Pure: no Dagster.

One row per movement, joined movimento -> cartao -> conta -> associado, every
contract column already in its exact text format. Clients without movements keep
one row whose movement columns are null, so every client reaches the output.

The three small tables are broadcast, so the movements are never shuffled: when they
are read one partition per range of clients (extract.read_tables), the view keeps that
partitioning, and each client's rows stay in one partition.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from desafio_dagster.core.extract import Clients, ExportedSnapshot, read_tables
from desafio_dagster.core.layout import CSV_COLUMNS

KEY_COLUMNS = ("client_id", "movement_id", "movement_time")
_TIMESTAMP_FORMAT = "yyyy-MM-dd HH:mm:ss"


def masked(card_number):
    """Every character but the last four replaced by '*'."""
    return F.concat(F.repeat(F.lit("*"), F.greatest(F.length(card_number) - 4, F.lit(0))), F.substring(card_number, -4, 4))


def flat_view(tables: dict[str, DataFrame], without_movements: Sequence[int], mask_card_numbers: bool = True) -> DataFrame:
    """KEY_COLUMNS (movement_id and movement_time null for a client without movements), then CSV_COLUMNS
    as text. without_movements: the ids of the clients that have no movement (from the snapshot's figures)."""
    # Format the small tables before the join, so each card's and account's text is
    # computed once, not once per movement.
    clients = tables["associado"].select(
        F.col("id").alias("client_id"),
        F.col("nome").alias("nome_associado"),
        F.col("sobrenome").alias("sobrenome_associado"),
        F.col("idade").cast("string").alias("idade_associado"),
    )
    accounts = tables["conta"].select(
        F.col("id").alias("account_id"),
        F.col("id_associado").alias("client_id"),
        F.col("tipo").alias("tipo_conta"),
        F.date_format("data_criacao", _TIMESTAMP_FORMAT).alias("data_criacao_conta"),
    )
    card_number = F.col("num_cartao")
    cards = tables["cartao"].select(
        F.col("id").alias("card_id"),
        F.col("id_conta").alias("account_id"),
        (masked(card_number) if mask_card_numbers else card_number).alias("numero_cartao"),
        F.col("nom_impresso").alias("nome_impresso_cartao"),
        F.date_format("data_criacao", _TIMESTAMP_FORMAT).alias("data_criacao_cartao"),
    )
    movements = tables["movimento"].select(
        F.col("id").alias("movement_id"),
        F.col("id_cartao").alias("card_id"),
        F.col("vlr_transacao").cast("string").alias("vlr_transacao_movimento"),
        F.col("des_transacao").alias("des_transacao_movimento"),
        F.date_format("data_movimento", _TIMESTAMP_FORMAT).alias("data_movimento"),
        F.col("data_movimento").alias("movement_time"),  # orders rows to the microsecond
    )
    # Inner joins from the big side, the small tables broadcast: the movements are not shuffled.
    with_movements = (movements.join(F.broadcast(cards), "card_id").join(F.broadcast(accounts), "account_id")
                      .join(F.broadcast(clients), "client_id"))
    header_only = clients.filter(F.col("client_id").isin(list(without_movements))).select(
        "client_id",
        F.lit(None).cast("long").alias("movement_id"),
        F.lit(None).cast("timestamp_ntz").alias("movement_time"),
        *CSV_COLUMNS[:3],
        *[F.lit(None).cast("string").alias(name) for name in CSV_COLUMNS[3:]],
    )
    return with_movements.select(*KEY_COLUMNS, *CSV_COLUMNS).unionByName(header_only)


def snapshot_view(spark, exported: ExportedSnapshot, parts: int, mask_card_numbers: bool = True,
                  only: set[int] | None = None) -> DataFrame:
    """The flat view of the export's snapshot (of the clients in `only`, if given), its movements read
    in at most `parts` ranges of clients. Nothing else is read."""
    snapshot = exported.snapshot
    selected = None if only is None else Clients(min(only), max(only), tuple(sorted(only)))
    tables = read_tables(spark, exported, snapshot.client_ranges(parts, only), selected)
    return flat_view(tables, snapshot.without_movements(only), mask_card_numbers)

