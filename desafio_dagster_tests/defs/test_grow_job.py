"""The grow job: the source_database op with add_days > 0, its metadata and the 17 source checks after it."""

import logging

import dagster as dg
import pytest

from desafio_dagster.definitions import defs
from desafio_dagster.defs.assets.source import RAW_TABLES
from desafio_dagster.defs.assets.source_checks import RULES
from desafio_dagster_tests.helpers import SMALL_CONFIG, failed_run_message, run_populate

GROWTH_CONFIG = {"add_days": 2, "active_clients_per_day": 0.2, "new_clients_per_day": 0.1, "seed": 9}


def run_grow(config: dict | None = None, instance: dg.DagsterInstance | None = None, **kwargs) -> dg.ExecuteInProcessResult:
    """The grow job; config None: its default run config (add_days 1)."""
    run_config = {} if config is None else {"ops": {"source_database": {"config": config}}}
    return defs.resolve_job_def("grow").execute_in_process(
        run_config=run_config, instance=instance or dg.DagsterInstance.ephemeral(), **kwargs)


def _materializations(result) -> dict[str, dict]:
    return {m.asset_key.to_user_string(): {k: v.value for k, v in m.metadata.items()}
            for m in result.asset_materializations_for_node("source_database")}


def test_grow_adds_days_passes_the_17_checks_and_records_the_rows_added(source_db):
    assert run_populate(SMALL_CONFIG).success
    before = source_db.row_counts()
    result = run_grow(GROWTH_CONFIG)
    assert result.success
    after = source_db.row_counts()
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(RULES) == 17 and all(e.passed for e in evaluations)
    materializations = _materializations(result)
    assert set(materializations) == set(RAW_TABLES)
    for key, table in RAW_TABLES.items():
        metadata = materializations[key]
        assert metadata["rows_added"] == after[table] - before[table]
        assert metadata["dagster/row_count"] == after[table], "the table's total after the growth"
        assert "generation" not in metadata
        assert metadata["growth"] == {**GROWTH_CONFIG, "accounts_per_client": [1, 3], "cards_per_account": [1, 2],
                                      "first_day": "2026-01-01", "last_day": "2026-01-02"}
    assert materializations["raw_clients"]["rows_added"] == 3 + 3  # round(0.1 x 30), then round(0.1 x 33)
    assert materializations["raw_movements"]["rows_added"] > 0


def test_grow_without_config_adds_one_day_and_warns_when_the_shares_round_to_nobody(source_db):
    assert run_populate(SMALL_CONFIG).success  # 30 clients: 1% and 0.1% of them round to 0
    before = source_db.row_counts()
    instance = dg.DagsterInstance.ephemeral()
    result = run_grow(instance=instance)
    assert result.success
    metadata = _materializations(result)["raw_movements"]
    assert metadata["growth"]["add_days"] == 1 and metadata["growth"]["first_day"] == metadata["growth"]["last_day"]
    assert metadata["rows_added"] == 0 and source_db.row_counts() == before
    warnings = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.level == logging.WARNING]
    assert any("no rows added" in message and "active_clients_per_day" in message for message in warnings), warnings


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"add_days": -1}, "add_days must be an integer >= 1"),
        ({"add_days": 1, "active_clients_per_day": 0}, "active_clients"),
        ({"add_days": 1, "new_clients_per_day": -0.5}, "new_clients"),
        ({"add_days": 1, "cards_per_account": [2, 1]}, "cards_per_account"),
        ({"add_days": 100_000}, "add_days: 100000 day(s) after the source's last day 2025-12-31"),
        ({"active_clients_per_day": 0.5}, "the grow job adds days to the source: add_days must be >= 1"),
    ],
)
def test_invalid_growth_config_fails_without_retries_and_keeps_the_data(populated_db, config, words):
    before = populated_db.row_counts()
    result = run_grow(config, raise_on_error=False)
    message = failed_run_message(result)
    assert "invalid source_database config" in message or "grow job" in message
    assert words in message, message
    assert "max_retries" not in message, "an invalid config is not retried"
    assert populated_db.row_counts() == before


def test_growing_a_missing_source_fails_saying_to_populate_first(source_db):
    message = failed_run_message(run_grow({"add_days": 1}, raise_on_error=False))
    assert "missing" in message and "run the populate job first" in message and "max_retries" not in message
