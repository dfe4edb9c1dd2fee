"""Blocking checks on the raw assets: each rule is a query returning the ids that break it."""

from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
from psycopg import sql

from desafio_dagster.core.source.pg import one
from desafio_dagster.core.source.source_db import SourceDatabase
from desafio_dagster.defs.resources.postgres import PostgresResource
from desafio_dagster.defs.utils import user_errors


@dataclass(frozen=True)
class Rule:
    asset: str
    name: str
    description: str
    violations: str  # SELECT of offending ids (search_path is the source schema)


def _duplicates(table: str, column: str) -> str:
    return f"SELECT {column} FROM {table} GROUP BY {column} HAVING count(*) > 1"


def _orphans(child: str, column: str, parent: str) -> str:
    return f"SELECT c.id FROM {child} c WHERE NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.id = c.{column})"


_LUHN_INVALID = """
SELECT k.id FROM cartao k
WHERE k.num_cartao !~ '^[0-9]{12,19}$'
   OR mod((SELECT sum(CASE WHEN mod(x.i, 2) = 1 THEN mod(x.d * 2, 10) + (x.d * 2) / 10 ELSE x.d END)
       FROM (SELECT i, substr(reverse(k.num_cartao), i + 1, 1)::int AS d
             FROM generate_series(0, length(k.num_cartao) - 1) AS i) x), 10) <> 0"""

RULES = [
    Rule("raw_clients", "clients_primary_key", "associado.id is unique and not null", _duplicates("associado", "id") + " UNION ALL SELECT id FROM associado WHERE id IS NULL"),
    Rule("raw_clients", "clients_age_in_range", "idade between 18 and 100", "SELECT id FROM associado WHERE idade IS NULL OR idade NOT BETWEEN 18 AND 100"),
    Rule("raw_clients", "clients_names_not_blank", "nome and sobrenome are not blank", "SELECT id FROM associado WHERE coalesce(btrim(nome), '') = '' OR coalesce(btrim(sobrenome), '') = ''"),
    Rule("raw_clients", "clients_emails_unique", "e-mails are unique (case-insensitive)", "SELECT min(id) FROM associado GROUP BY lower(email) HAVING count(*) > 1"),
    Rule("raw_accounts", "accounts_primary_key", "conta.id is unique and not null", _duplicates("conta", "id") + " UNION ALL SELECT id FROM conta WHERE id IS NULL"),
    Rule("raw_accounts", "accounts_client_exists", "every account's client exists", _orphans("conta", "id_associado", "associado")),
    Rule("raw_cards", "cards_primary_key", "cartao.id is unique and not null", _duplicates("cartao", "id") + " UNION ALL SELECT id FROM cartao WHERE id IS NULL"),
    Rule("raw_cards", "cards_account_exists", "every card's account exists", _orphans("cartao", "id_conta", "conta")),
    Rule("raw_cards", "cards_owner_is_account_owner", "cartao.id_associado equals its account's id_associado", "SELECT k.id FROM cartao k JOIN conta c ON c.id = k.id_conta WHERE k.id_associado IS DISTINCT FROM c.id_associado"),
    Rule("raw_cards", "cards_numbers_luhn_valid", "card numbers are 12-19 digits and Luhn-valid", _LUHN_INVALID),
    Rule("raw_cards", "cards_numbers_unique", "card numbers are unique", "SELECT min(id) FROM cartao GROUP BY num_cartao HAVING count(*) > 1"),
    Rule("raw_cards", "cards_created_after_account", "a card is created no earlier than its account", "SELECT k.id FROM cartao k JOIN conta c ON c.id = k.id_conta WHERE k.data_criacao < c.data_criacao"),
    Rule("raw_movements", "movements_primary_key", "movimento.id is unique and not null", _duplicates("movimento", "id") + " UNION ALL SELECT id FROM movimento WHERE id IS NULL"),
    Rule("raw_movements", "movements_card_exists", "every movement's card exists", _orphans("movimento", "id_cartao", "cartao")),
    Rule("raw_movements", "movements_after_card_creation", "a movement happens no earlier than its card's creation", "SELECT m.id FROM movimento m JOIN cartao k ON k.id = m.id_cartao WHERE m.data_movimento < k.data_criacao"),
    Rule("raw_movements", "movements_not_in_future", "no movement is dated in the future (timestamps are UTC)", "SELECT id FROM movimento WHERE data_movimento > (now() AT TIME ZONE 'UTC')"),
    Rule("raw_movements", "movements_description_not_blank", "des_transacao is not blank", "SELECT id FROM movimento WHERE coalesce(btrim(des_transacao), '') = ''"),
]

_SAMPLE = 5


def evaluate(db: SourceDatabase, rules: list[Rule] = RULES) -> Iterator[tuple[Rule, int, list[int]]]:
    """(rule, violation count, a few offending ids) for each rule."""
    with db.connect() as conn:
        db.require_tables(conn)
        for rule in rules:
            query = sql.SQL("SELECT count(*), (array_agg(v.id ORDER BY v.id))[1:%s] FROM ({}) AS v(id)").format(
                sql.SQL(rule.violations)
            )
            count, sample = one(conn, query, (_SAMPLE,))
            yield rule, count, sample or []


@dg.multi_asset_check(
    name="source_database_checks",
    specs=[dg.AssetCheckSpec(r.name, asset=r.asset, description=r.description, blocking=True) for r in RULES],
)
def source_database_checks(postgres: PostgresResource) -> Iterator[dg.AssetCheckResult]:
    """Integrity of the source snapshot; a failure blocks everything downstream."""
    with user_errors():
        for rule, count, sample in evaluate(postgres.database()):
            yield dg.AssetCheckResult(
                asset_key=rule.asset,
                check_name=rule.name,
                passed=count == 0,
                metadata={"violations": count, "sample_ids": dg.MetadataValue.json(sample)},
                description=rule.description,
            )
