import os

import dagster as dg
import pytest
import yaml

from desafio_dagster.definitions import defs
from desafio_dagster.defs.assets.source import COLUMN_SCHEMAS, RAW_TABLES
from desafio_dagster.defs.assets.source_checks import RULES, evaluate
from desafio_dagster_tests.helpers import SMALL_CONFIG, dagster_cli, failure_message, run_populate


def test_populate_materializes_the_four_tables_with_metadata_and_passing_checks(source_db):
    result = run_populate(SMALL_CONFIG)
    assert result.success
    counts = source_db.row_counts()
    materializations = {m.asset_key.to_user_string(): m for m in result.asset_materializations_for_node("source_database")}
    assert set(materializations) == {"raw_clients", "raw_accounts", "raw_cards", "raw_movements"}
    for key, table in [("raw_clients", "associado"), ("raw_cards", "cartao"), ("raw_movements", "movimento")]:
        metadata = materializations[key].metadata
        assert metadata["dagster/row_count"].value == counts[table]
        assert metadata["table"].value == f"sicooperative.{table}"
        assert metadata["generation"].value["seed"] == 5
    table = materializations["raw_cards"].metadata["preview"]
    assert [c.name for c in table.schema.columns] == [c.name for c in COLUMN_SCHEMAS["raw_cards"].columns]
    preview = " ".join(str(record.data) for record in table.records)
    number = source_db.preview("cartao", 1)[0]["num_cartao"]
    assert number.startswith("************") and number in preview
    with source_db.connect() as conn:
        full = conn.execute("SELECT num_cartao FROM cartao ORDER BY id LIMIT 1").fetchone()[0]
    assert full not in preview
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(RULES) and all(e.passed for e in evaluations)
    assert counts["associado"] == 30


def test_same_config_gives_the_same_database(source_db):
    def dump():
        with source_db.connect() as conn:
            return [conn.execute(f"SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM {t} t").fetchone()[0]
                    for t in ("associado", "conta", "cartao", "movimento")]

    assert run_populate(SMALL_CONFIG).success
    first = dump()
    assert run_populate({**SMALL_CONFIG, "seed": 6}).success
    assert dump() != first
    assert run_populate(SMALL_CONFIG).success
    assert dump() == first


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"clients": -5}, "clients"),
        ({"accounts_per_client": [3, 1]}, "accounts_per_client"),
        ({"movements_per_card": [5, 2]}, "movements_per_card"),
        ({"start_date": "2024-05-01", "end_date": "2024-01-01"}, "end_date"),
        ({"end_date": "2999-01-01"}, "end_date"),
    ],
)
def test_invalid_config_fails_naming_the_field_and_keeps_the_data(populated_db, changes, field):
    before = populated_db.row_counts()
    result = run_populate({**SMALL_CONFIG, **changes}, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "invalid source_database config" in failure.message and field in failure.message
    assert populated_db.row_counts() == before


def test_unknown_config_key_is_rejected_before_running(populated_db):
    with pytest.raises(dg.DagsterInvalidConfigError, match="clientz"):
        run_populate({**SMALL_CONFIG, "clientz": 3})


def test_unreachable_server_fails_clearly_without_the_password(monkeypatch):
    monkeypatch.setenv("DESAFIO_POSTGRES_URL", "postgresql://bob:hunter2-secret@127.0.0.1:1/db")
    result = run_populate(SMALL_CONFIG, raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "127.0.0.1:1" in message and "hunter2-secret" not in message
    assert "Exceeded max_retries of 2" in message, "a refused connection is retried"
    logs = "\n".join(str(e) for e in result.all_events)
    assert "hunter2-secret" not in logs


# One corruption per rule; each must make exactly its own rule fail.
CORRUPTIONS = {
    "clients_primary_key": ["ALTER TABLE associado DROP CONSTRAINT associado_pkey CASCADE",
                            "INSERT INTO associado VALUES (1, 'Outra', 'Pessoa', 30, 'dup-pk@example.com')"],
    "clients_age_in_range": ["ALTER TABLE associado DROP CONSTRAINT associado_idade_check",
                             "UPDATE associado SET idade = 17 WHERE id = 2"],
    "clients_names_not_blank": ["UPDATE associado SET sobrenome = '   ' WHERE id = 3"],
    "clients_emails_unique": ["UPDATE associado SET email = upper((SELECT email FROM associado WHERE id = 1)) WHERE id = 2"],
    "accounts_primary_key": ["ALTER TABLE conta DROP CONSTRAINT conta_pkey CASCADE",
                             "INSERT INTO conta SELECT * FROM conta WHERE id = 1"],
    "accounts_client_exists": ["SET session_replication_role = replica",
                               "UPDATE conta SET id_associado = 999999 WHERE id = (SELECT max(id) FROM conta)",
                               "UPDATE cartao SET id_associado = 999999 WHERE id_conta = (SELECT max(id) FROM conta)"],
    "cards_primary_key": ["ALTER TABLE cartao DROP CONSTRAINT cartao_pkey CASCADE",
                          "INSERT INTO cartao (id, num_cartao, nom_impresso, data_criacao, id_conta, id_associado) "
                          "SELECT id, '4111111111111111', nom_impresso, data_criacao, id_conta, id_associado FROM cartao WHERE id = 1"],
    "cards_account_exists": ["SET session_replication_role = replica",
                             "UPDATE cartao SET id_conta = 999999 WHERE id = 1"],
    "cards_owner_is_account_owner": ["UPDATE cartao SET id_associado = id_associado % (SELECT max(id) FROM associado) + 1 WHERE id = 1"],
    "cards_numbers_luhn_valid": ["UPDATE cartao SET num_cartao = left(num_cartao, -1) || ((right(num_cartao, 1)::int + 1) % 10)::text WHERE id = 1"],
    "cards_numbers_unique": ["ALTER TABLE cartao DROP CONSTRAINT cartao_num_cartao_key",
                             "UPDATE cartao SET num_cartao = (SELECT num_cartao FROM cartao WHERE id = 1) WHERE id = 2"],
    "cards_created_after_account": ["UPDATE cartao k SET data_criacao = c.data_criacao - interval '1 day' FROM conta c WHERE c.id = k.id_conta AND k.id = 1"],
    "movements_primary_key": ["ALTER TABLE movimento DROP CONSTRAINT movimento_pkey",
                              "INSERT INTO movimento SELECT * FROM movimento WHERE id = 1"],
    "movements_card_exists": ["SET session_replication_role = replica",
                              "UPDATE movimento SET id_cartao = 999999 WHERE id = 1"],
    "movements_after_card_creation": ["UPDATE movimento m SET data_movimento = k.data_criacao - interval '1 second' FROM cartao k WHERE k.id = m.id_cartao AND m.id = 1"],
    "movements_not_in_future": ["UPDATE movimento SET data_movimento = localtimestamp + interval '1 day' WHERE id = 1"],
    "movements_description_not_blank": ["UPDATE movimento SET des_transacao = '' WHERE id = 1"],
}


def test_every_rule_has_a_corruption():
    assert set(CORRUPTIONS) == {rule.name for rule in RULES}


def _corrupt(db, statements):
    with db.connect() as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.mark.parametrize("rule_name", sorted(CORRUPTIONS))
def test_each_check_fails_on_data_that_breaks_it(populated_db, rule_name):
    assert [r.name for r, count, _ in evaluate(populated_db) if count] == []
    _corrupt(populated_db, CORRUPTIONS[rule_name])
    failing = {r.name: sample for r, count, sample in evaluate(populated_db) if count}
    assert list(failing) == [rule_name]
    assert failing[rule_name], "offending ids are reported"


def test_a_failed_check_fails_the_dagster_check_step_and_blocks(populated_db):
    _corrupt(populated_db, CORRUPTIONS["cards_owner_is_account_owner"])
    checks_only = dg.define_asset_job("checks_only", selection=dg.AssetSelection.checks_for_assets(*RAW_TABLES))
    job = dg.Definitions.merge(defs, dg.Definitions(jobs=[checks_only])).resolve_job_def("checks_only")
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success  # blocking: the step fails, so nothing downstream would run
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["cards_owner_is_account_owner"].passed
    assert evaluations["cards_owner_is_account_owner"].metadata["violations"].value == 1
    assert all(e.passed for name, e in evaluations.items() if name != "cards_owner_is_account_owner")


@pytest.mark.command
def test_populate_from_dagsters_cli(source_db, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({"ops": {"source_database": {"config": SMALL_CONFIG}}}))
    code, out = dagster_cli("populate", "-c", str(config), env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    assert code == 0, out[-3000:]
    assert "RUN_SUCCESS" in out
    assert source_db.row_counts()["associado"] == SMALL_CONFIG["clients"]
