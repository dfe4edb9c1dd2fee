"""The same extract -> join -> one CSV per client in DuckDB, as the benchmark's baseline.

    python bench/duckdb_export.py OUTPUT_DIR   (reads DESAFIO_POSTGRES_URL's sicooperative schema)

Extract: COPY ... TO STDOUT as CSV files (DuckDB's postgres extension would need a
download). Join and write: one DuckDB statement, COPY ... PARTITION_BY client.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import duckdb
import psycopg

COLUMNS = {
    "associado": "id BIGINT, nome VARCHAR, sobrenome VARCHAR, idade INTEGER, email VARCHAR",
    "conta": "id BIGINT, tipo VARCHAR, data_criacao TIMESTAMP, id_associado BIGINT",
    "cartao": "id BIGINT, num_cartao VARCHAR, nom_impresso VARCHAR, data_criacao TIMESTAMP, id_conta BIGINT, id_associado BIGINT",
    "movimento": "id BIGINT, vlr_transacao DECIMAL(10,2), des_transacao VARCHAR, data_movimento TIMESTAMP, id_cartao BIGINT",
}

JOIN = """
SELECT a.id AS client_id, a.nome AS nome_associado, a.sobrenome AS sobrenome_associado, a.idade AS idade_associado,
       CAST(m.vlr_transacao AS VARCHAR) AS vlr_transacao_movimento, m.des_transacao AS des_transacao_movimento,
       strftime(m.data_movimento, '%Y-%m-%d %H:%M:%S') AS data_movimento,
       repeat('*', length(k.num_cartao) - 4) || right(k.num_cartao, 4) AS numero_cartao,
       k.nom_impresso AS nome_impresso_cartao, strftime(k.data_criacao, '%Y-%m-%d %H:%M:%S') AS data_criacao_cartao,
       c.tipo AS tipo_conta, strftime(c.data_criacao, '%Y-%m-%d %H:%M:%S') AS data_criacao_conta
FROM movimento m JOIN cartao k ON k.id = m.id_cartao JOIN conta c ON c.id = k.id_conta JOIN associado a ON a.id = c.id_associado
ORDER BY a.id, m.data_movimento, m.id"""


def main(output: Path) -> None:
    url = os.environ.get("DESAFIO_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/desafio_bench")
    with tempfile.TemporaryDirectory() as staging:
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            for table, columns in COLUMNS.items():
                names = ", ".join(c.split()[0] for c in columns.split(", "))
                with open(Path(staging) / f"{table}.csv", "wb") as handle, cur.copy(
                    f"COPY (SELECT {names} FROM sicooperative.{table}) TO STDOUT (FORMAT csv)"
                ) as copy:
                    for chunk in copy:
                        handle.write(chunk)
        db = duckdb.connect(config={"temp_directory": f"{staging}/spill"})  # not ./.tmp in the working directory
        for table, columns in COLUMNS.items():
            spec = "{" + ", ".join(f"'{c.split()[0]}': '{c.split(' ', 1)[1]}'" for c in columns.split(", ")) + "}"
            db.execute(f"CREATE VIEW {table} AS SELECT * FROM read_csv('{staging}/{table}.csv', header=false, columns={spec})")
        shutil.rmtree(output, ignore_errors=True)
        db.execute(f"COPY ({JOIN}) TO '{output}' (FORMAT csv, HEADER, PARTITION_BY (client_id))")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
