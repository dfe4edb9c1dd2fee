"""raw_clients, raw_accounts, raw_cards, raw_movements: one consistent snapshot of the
source database, generated and replaced in one transaction by the op `source_database`."""

import dagster as dg
from pydantic import Field

from desafio_dagster.core.fakedata import GenerationSpec, InvalidSpec, generate
from desafio_dagster.core.progress import rows_loaded
from desafio_dagster.core.source_db import ddl_columns
from desafio_dagster.defs.resources.postgres import PostgresResource
from desafio_dagster.defs.utils import TRANSIENT_RETRY_POLICY, metadata_table, user_errors

RAW_TABLES = {"raw_clients": "associado", "raw_accounts": "conta", "raw_cards": "cartao", "raw_movements": "movimento"}
_DESCRIPTIONS = {
    "raw_clients": "Members of the cooperative (associado).",
    "raw_accounts": "Accounts, 1..N per client (conta).",
    "raw_cards": "Cards, 1..N per account, owned by the account's owner (cartao).",
    "raw_movements": "Card movements: debits and credits (movimento).",
}
_PARENT = {"raw_accounts": "raw_clients", "raw_cards": "raw_accounts", "raw_movements": "raw_cards"}


def _column(column) -> dg.TableColumn:
    """A column of sql/schema.sql as the UI shows it, its constraints as declared."""
    key = "PRIMARY KEY" in column.constraints
    return dg.TableColumn(column.name, column.type, description=column.constraints or None,
                          constraints=dg.TableColumnConstraints(nullable=not key and "NOT NULL" not in column.constraints,
                                                                unique=key or "UNIQUE" in column.constraints))


# The contract's columns of each table, read from sql/schema.sql; shown in the UI before any run.
COLUMN_SCHEMAS = {key: dg.TableSchema(columns=[_column(c) for c in ddl_columns()[table]]) for key, table in RAW_TABLES.items()}
# Bump when the generation or the load changes what the four tables hold for the same config.
CODE_VERSION = "1"
_DEFAULT = GenerationSpec()
# populate and export never overlap on the source database: the instance's dagster.yaml sets
# every pool's limit to 1, so a second run waits in the queue and the UI says for which pool.
SOURCE_DATABASE_POOL = "source_database"


class SourceDatabaseConfig(dg.Config):
    """The generation: same config and seed, same data."""

    clients: int = Field(default=_DEFAULT.clients, description="Number of clients (associado rows)")
    accounts_per_client: list[int] = Field(default=list(_DEFAULT.accounts_per_client), description="[min, max], min >= 1")
    cards_per_account: list[int] = Field(default=list(_DEFAULT.cards_per_account), description="[min, max], min >= 1")
    movements_per_card: list[int] = Field(default=list(_DEFAULT.movements_per_card), description="[min, max], min >= 0")
    start_date: str = Field(default=str(_DEFAULT.start_date), description="First day of generated dates, YYYY-MM-DD")
    end_date: str = Field(default=str(_DEFAULT.end_date), description="Last day of generated dates, YYYY-MM-DD, before today")
    seed: int = Field(default=_DEFAULT.seed, description="Random seed")

    def to_spec(self) -> GenerationSpec:
        try:
            return GenerationSpec(**self.model_dump())
        except InvalidSpec as error:
            raise dg.Failure(f"invalid source_database config: {error}", allow_retries=False) from None


@dg.multi_asset(
    name="source_database",
    specs=[
        dg.AssetSpec(
            key,
            description=_DESCRIPTIONS[key],
            deps=[_PARENT[key]] if key in _PARENT else [],
            kinds={"postgres"},
            group_name="source",
            metadata={"dagster/column_schema": COLUMN_SCHEMAS[key]},
            code_version=CODE_VERSION,
        )
        for key in RAW_TABLES
    ],
    pool=SOURCE_DATABASE_POOL,
    retry_policy=TRANSIENT_RETRY_POLICY,
)
def source_database(context: dg.AssetExecutionContext, config: SourceDatabaseConfig, postgres: PostgresResource):
    """Generate the whole source database and replace its four tables in one transaction."""
    spec = config.to_spec()  # invalid config fails here, before the database is touched
    with user_errors():
        db = postgres.database()
        context.log.info(f"generating {spec.clients:,} clients (seed {spec.seed}) into {db}")

        def progress(rows: int, seconds: float) -> None:
            context.log.info(rows_loaded(rows, seconds))

        counts = db.replace(generate(spec), on_progress=progress, on_wait=context.log.warning)
        with db.connect() as conn:
            for key, table in RAW_TABLES.items():
                yield dg.MaterializeResult(
                    asset_key=key,
                    metadata={
                        "dagster/row_count": counts[table],
                        "table": f"{db.schema}.{table}",
                        "preview": metadata_table(db.preview(table, conn=conn), COLUMN_SCHEMAS[key]),
                        "generation": dg.MetadataValue.json(config.model_dump()),
                    },
                )
