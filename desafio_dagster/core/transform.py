"""The flat view of card movements, in Spark. Pure: no Dagster.

One row per movement, joined movimento -> cartao -> conta -> associado, every
contract column already in its exact text format. Clients without movements keep
one row whose movement columns are null, so every client reaches the output.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from desafio_dagster.core.extract import SOURCE_SCHEMAS
from desafio_dagster.core.layout import CSV_COLUMNS
from desafio_dagster.core.staging import Staging

KEY_COLUMNS = ("client_id", "movement_id", "movement_time")
_TIMESTAMP_FORMAT = "yyyy-MM-dd HH:mm:ss"


def read_snapshot(spark: SparkSession, staging: Staging) -> dict[str, DataFrame]:
    return {table: spark.read.parquet(staging.uri(table)) for table in SOURCE_SCHEMAS}


def masked(card_number):
    """Every character but the last four replaced by '*'."""
    return F.concat(F.repeat(F.lit("*"), F.greatest(F.length(card_number) - 4, F.lit(0))), F.substring(card_number, -4, 4))


def flat_view(tables: dict[str, DataFrame], mask_card_numbers: bool = True) -> DataFrame:
    """KEY_COLUMNS (movement_id and movement_time null for a client without movements), then CSV_COLUMNS as text."""
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
    # Inner joins from the big side: below Spark's broadcast threshold the small tables are
    # broadcast and the movements are not shuffled for the join.
    with_movements = movements.join(cards, "card_id").join(accounts, "account_id").join(clients, "client_id")
    without_movements = clients.join(with_movements.select("client_id").distinct(), "client_id", "left_anti").select(
        "client_id",
        F.lit(None).cast("long").alias("movement_id"),
        F.lit(None).cast("timestamp_ntz").alias("movement_time"),
        *CSV_COLUMNS[:3],
        *[F.lit(None).cast("string").alias(name) for name in CSV_COLUMNS[3:]],
    )
    return with_movements.select(*KEY_COLUMNS, *CSV_COLUMNS).unionByName(without_movements)
