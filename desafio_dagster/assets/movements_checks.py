"""Checks on the published movements_csv against the source database (the oracle)."""

from decimal import Decimal

import dagster as dg

from desafio_dagster.dagster_utils import user_errors
from desafio_dagster.io_managers.per_client_csv import PerClientCsvIOManager
from desafio_dagster.publish import HEADER, client_file_name, scan_published
from desafio_dagster.resources.postgres import PostgresResource

_EXPECTED_PER_CLIENT = """
SELECT a.id, a.nome, a.sobrenome, count(m.id), coalesce(sum(m.vlr_transacao), 0)
FROM associado a
LEFT JOIN conta c ON c.id_associado = a.id
LEFT JOIN cartao k ON k.id_conta = c.id
LEFT JOIN movimento m ON m.id_cartao = k.id
GROUP BY a.id ORDER BY a.id"""
_SAMPLE = 5

SPECS = [
    dg.AssetCheckSpec("total_rows_match_source", asset="movements_csv", blocking=True,
                      description="Rows in all files equal the movements joined in Postgres"),
    dg.AssetCheckSpec("client_totals_match_source", asset="movements_csv", blocking=True,
                      description="Per client, row count and sum of values equal Postgres"),
    dg.AssetCheckSpec("one_file_per_client", asset="movements_csv", blocking=True,
                      description="Every client has exactly one file, named by the contract, and nothing else is there"),
    dg.AssetCheckSpec("headers_match_contract", asset="movements_csv", blocking=True,
                      description="Every file starts with the contract's header row"),
]


@dg.multi_asset_check(specs=SPECS, name="movements_csv_checks")
def movements_csv_checks(postgres: PostgresResource, csv_io_manager: dg.ResourceParam[PerClientCsvIOManager]):
    """Read the published files back (Python's csv module) and compare them with Postgres."""
    with user_errors():
        with postgres.database().connect() as conn:
            expected = {
                client_file_name(client_id, nome, sobrenome): (rows, Decimal(total))
                for client_id, nome, sobrenome, rows, total in conn.execute(_EXPECTED_PER_CLIENT)
            }
    files = scan_published(csv_io_manager.folder("movements_csv"))

    expected_rows, actual_rows = sum(r for r, _ in expected.values()), sum(f.rows for f in files.values())
    yield dg.AssetCheckResult(check_name="total_rows_match_source", passed=actual_rows == expected_rows,
                              metadata={"rows_in_files": actual_rows, "rows_in_postgres": expected_rows})

    mismatched = sorted(
        name for name in expected.keys() | files.keys()
        if name not in files or name not in expected or (files[name].rows, files[name].total) != expected[name]
    )
    yield dg.AssetCheckResult(check_name="client_totals_match_source", passed=not mismatched,
                              metadata={"files_mismatched": len(mismatched), "sample": mismatched[:_SAMPLE]})

    missing, unexpected = sorted(expected.keys() - files.keys()), sorted(files.keys() - expected.keys())
    yield dg.AssetCheckResult(check_name="one_file_per_client", passed=not missing and not unexpected,
                              metadata={"files": len(files), "clients": len(expected),
                                        "missing": missing[:_SAMPLE], "unexpected": unexpected[:_SAMPLE]})

    bad_headers = sorted(name for name, scan in files.items() if scan.header != HEADER)
    yield dg.AssetCheckResult(check_name="headers_match_contract", passed=not bad_headers,
                              metadata={"files_with_wrong_header": len(bad_headers), "sample": bad_headers[:_SAMPLE]})
