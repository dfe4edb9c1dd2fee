"""raw_clients, raw_accounts, raw_cards, raw_movements: one consistent snapshot of the
source database, generated and replaced in one transaction by the op `source_database`, or grown
by days of activity (config add_days > 0, the `grow` job), also in one transaction."""

import datetime as dt
from collections.abc import Iterator
from typing import cast

import dagster as dg
from pydantic import Field

from desafio_dagster.core.progress import rows_loaded
from desafio_dagster.core.source import loading
from desafio_dagster.core.source.fakedata import GenerationSpec, GrowthSpec, InvalidSpec, generate
from desafio_dagster.core.source.source_db import DdlColumn, ddl_columns
from desafio_dagster.defs import metadata as meta
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


def _column(column: DdlColumn) -> dg.TableColumn:
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
_GROWTH = GrowthSpec()
# populate and export never overlap on the source database: the instance's dagster.yaml sets
# every pool's limit to 1, so a second run waits in the queue and the UI says for which pool.
SOURCE_DATABASE_POOL = "source_database"


def _as_range(values: list[int]) -> tuple[int, int]:
    """A [min, max] of the config, as the spec takes it; the spec checks it (InvalidSpec names a wrong one)."""
    return cast(tuple[int, int], tuple(values))


class SourceDatabaseConfig(dg.Config):
    """The generation (add_days 0: same config and seed, same data), or the growth (add_days > 0: same
    source, seed and days, same rows added)."""

    clients: int = Field(default=_DEFAULT.clients, description="Number of clients (associado rows)")
    accounts_per_client: list[int] = Field(default=list(_DEFAULT.accounts_per_client),
                                           description="[min, max], min >= 1 (new clients of a growth too)")
    cards_per_account: list[int] = Field(default=list(_DEFAULT.cards_per_account),
                                         description="[min, max], min >= 1 (new clients of a growth too)")
    movements_per_card: list[int] = Field(default=list(_DEFAULT.movements_per_card),
                                          description="[min, max], min >= 0, over the whole generation (not used by a growth)")
    start_date: str = Field(default=str(_DEFAULT.start_date), description="First day of generated dates, YYYY-MM-DD")
    end_date: str = Field(default=str(_DEFAULT.end_date), description="Last day of generated dates, YYYY-MM-DD, before today")
    seed: int = Field(default=_DEFAULT.seed, description="Random seed (of the generation, or of the growth)")
    add_days: int = Field(
        default=0,
        description="0: replace the whole source with the generation above. N > 0: keep the source and add N days "
        "of activity after its last day (the latest date in its tables), drawn from seed and the two shares below; "
        "clients, movements_per_card, start_date and end_date are then not used. Every added day must be before "
        "today (UTC).",
    )
    active_clients_per_day: float = Field(
        default=_GROWTH.active_clients,
        description=f"Growth only: share of the clients (0 < x <= 1) that get new movements each day, "
        f"{_GROWTH.movements_per_card[0]} to {_GROWTH.movements_per_card[1]} on one of their cards",
    )
    new_clients_per_day: float = Field(
        default=_GROWTH.new_clients,
        description="Growth only: new clients each day as a share of the clients (>= 0), with accounts, cards and "
        "movements dated that day",
    )

    def to_spec(self) -> GenerationSpec:
        try:
            return GenerationSpec(**self.model_dump(exclude=set(_GROWTH_FIELDS)))
        except InvalidSpec as error:
            raise dg.Failure(f"invalid source_database config: {error}", allow_retries=False) from None

    def to_growth(self) -> GrowthSpec | None:
        """The growth this config asks for; None when add_days is 0 (a replace)."""
        if self.add_days == 0:
            return None
        try:
            return GrowthSpec(days=self.add_days, active_clients=self.active_clients_per_day,
                              new_clients=self.new_clients_per_day, accounts_per_client=_as_range(self.accounts_per_client),
                              cards_per_account=_as_range(self.cards_per_account), seed=self.seed)
        except InvalidSpec as error:
            raise dg.Failure(f"invalid source_database config: {_growth_words(str(error))}", allow_retries=False) from None

    def growth_record(self) -> dict:
        """What the materialization records of a growth: the fields it used."""
        return {name: value for name, value in self.model_dump().items()
                if name in _GROWTH_FIELDS or name in ("accounts_per_client", "cards_per_account", "seed")}


# The config's growth fields, and the GrowthSpec fields they set.
_GROWTH_FIELDS = {"add_days": "days", "active_clients_per_day": "active_clients", "new_clients_per_day": "new_clients"}


def _growth_words(message: str) -> str:
    """An InvalidSpec message of GrowthSpec, with the config's field names."""
    for config_name, spec_name in _GROWTH_FIELDS.items():
        if message.startswith(f"{spec_name}:") or message.startswith(f"{spec_name} "):
            return config_name + message[len(spec_name):]
    return message


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
def source_database(context: dg.AssetExecutionContext, config: SourceDatabaseConfig,
                    postgres: PostgresResource) -> Iterator[dg.MaterializeResult]:
    """Generate the whole source database and replace its four tables in one transaction, or (add_days > 0)
    add days of activity after the source's last day, also in one transaction."""
    growth = config.to_growth()  # invalid config fails here, before the database is touched
    spec = config.to_spec() if growth is None else None
    if growth is None and context.job_name == "grow":
        raise dg.Failure("the grow job adds days to the source: add_days must be >= 1 (0 would replace the whole "
                         "source; run the populate job for that)", allow_retries=False)
    with user_errors():
        db = postgres.database()

        def progress(rows: int, seconds: float) -> None:
            context.log.info(rows_loaded(rows, seconds))

        if growth:
            context.log.info(f"adding {growth.days} day(s) of activity (seed {growth.seed}) to {db}")
            days: list[dt.date] = []

            def day_done(day: dt.date, rows: dict[str, int]) -> None:
                days.append(day)
                context.log.info(f"{day}: " + ", ".join(f"{n:,} {table}" for table, n in rows.items()))

            try:
                added = loading.grow(db, growth, on_progress=progress, on_wait=context.log.warning, on_day=day_done)
            except InvalidSpec as error:  # a day at or after today: known once the source's last day is read
                raise dg.Failure(f"invalid source_database config: {_growth_words(str(error))}",
                                 allow_retries=False) from None
            if not sum(added.values()):
                context.log.warning(
                    "no rows added: the shares of this source's clients round to 0 clients a day; raise "
                    "active_clients_per_day or new_clients_per_day")
            record = {"growth": dg.MetadataValue.json(
                {**config.growth_record(), "first_day": str(days[0]), "last_day": str(days[-1])})}
        else:
            assert spec is not None  # no growth: a generation
            context.log.info(f"generating {spec.clients:,} clients (seed {spec.seed}) into {db}")
            added = loading.replace(db, generate(spec), on_progress=progress, on_wait=context.log.warning)
            record = {"generation": dg.MetadataValue.json(config.model_dump(exclude=set(_GROWTH_FIELDS)))}
        with db.connect() as conn:
            totals = db.row_counts(conn) if growth else added
            for key, table in RAW_TABLES.items():
                yield dg.MaterializeResult(
                    asset_key=key,
                    metadata={
                        meta.ROW_COUNT: totals[table],
                        meta.ROWS_ADDED: added[table],
                        "table": f"{db.schema}.{table}",
                        "preview": metadata_table(db.preview(table, conn=conn), COLUMN_SCHEMAS[key]),
                        **record,
                    },
                )
