"""The flat view of card movements, in Spark. Pure: no Dagster.

One row per movement, joined movimento -> cartao -> conta -> associado, every
contract column already in its exact text format. Clients without movements keep
one row whose movement columns are null, so every client reaches the output.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from desafio_dagster.extract import SOURCE_SCHEMAS, Staging

CSV_COLUMNS = (
    "nome_associado",
    "sobrenome_associado",
    "idade_associado",
    "vlr_transacao_movimento",
    "des_transacao_movimento",
    "data_movimento",
    "numero_cartao",
    "nome_impresso_cartao",
    "data_criacao_cartao",
    "tipo_conta",
    "data_criacao_conta",
)
KEY_COLUMNS = ("client_id", "movement_id")
_TIMESTAMP_FORMAT = "yyyy-MM-dd HH:mm:ss"


def read_snapshot(spark: SparkSession, staging: Staging) -> dict[str, DataFrame]:
    return {table: spark.read.parquet(staging.uri(table)) for table in SOURCE_SCHEMAS}


def masked(card_number):
    """Every character but the last four replaced by '*'."""
    return F.concat(F.repeat(F.lit("*"), F.greatest(F.length(card_number) - 4, F.lit(0))), F.substring(card_number, -4, 4))


def flat_view(tables: dict[str, DataFrame], mask_card_numbers: bool = True) -> DataFrame:
    """client_id, movement_id (null for a client without movements), then CSV_COLUMNS as text."""
    client = tables["associado"].alias("a")
    account = tables["conta"].alias("c")
    card = tables["cartao"].alias("k")
    movement = tables["movimento"].alias("m")
    # Inner joins from the big side: the small tables are broadcast, movements never shuffle.
    joined = (
        movement.join(card, F.col("m.id_cartao") == F.col("k.id"))
        .join(account, F.col("k.id_conta") == F.col("c.id"))
        .join(client, F.col("a.id") == F.col("c.id_associado"))
    )
    card_number = F.col("k.num_cartao")
    with_movements = joined.select(
        F.col("a.id").alias("client_id"),
        F.col("m.id").alias("movement_id"),
        *_client_columns(),
        F.col("m.vlr_transacao").cast("string").alias("vlr_transacao_movimento"),
        F.col("m.des_transacao").alias("des_transacao_movimento"),
        F.date_format("m.data_movimento", _TIMESTAMP_FORMAT).alias("data_movimento"),
        (masked(card_number) if mask_card_numbers else card_number).alias("numero_cartao"),
        F.col("k.nom_impresso").alias("nome_impresso_cartao"),
        F.date_format("k.data_criacao", _TIMESTAMP_FORMAT).alias("data_criacao_cartao"),
        F.col("c.tipo").alias("tipo_conta"),
        F.date_format("c.data_criacao", _TIMESTAMP_FORMAT).alias("data_criacao_conta"),
    )
    clients_with_movements = with_movements.select(F.col("client_id").alias("id")).distinct()
    without_movements = client.join(clients_with_movements, "id", "left_anti").alias("a").select(
        F.col("a.id").alias("client_id"),
        F.lit(None).cast("long").alias("movement_id"),
        *_client_columns(),
        *[F.lit(None).cast("string").alias(name) for name in CSV_COLUMNS[3:]],
    )
    return with_movements.unionByName(without_movements)


def _client_columns():
    return (
        F.col("a.nome").alias("nome_associado"),
        F.col("a.sobrenome").alias("sobrenome_associado"),
        F.col("a.idade").cast("string").alias("idade_associado"),
    )
