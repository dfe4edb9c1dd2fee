"""The output contract of movements_csv: columns, header and file names. Pure: no Dagster."""

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass

from desafio_dagster.core.text import fold_ascii

# column -> (type, source and text format), in the files' order: the 11 columns of the contract.
CSV_CONTRACT = {
    "nome_associado": ("text", "associado.nome"),
    "sobrenome_associado": ("text", "associado.sobrenome"),
    "idade_associado": ("integer", "associado.idade"),
    "vlr_transacao_movimento": ("decimal", "movimento.vlr_transacao, two decimals with '.', e.g. -12.50"),
    "des_transacao_movimento": ("text", "movimento.des_transacao"),
    "data_movimento": ("timestamp", "movimento.data_movimento, YYYY-MM-DD HH:MM:SS"),
    "numero_cartao": ("text", "cartao.num_cartao, masked by default: every digit but the last 4 is '*'"),
    "nome_impresso_cartao": ("text", "cartao.nom_impresso"),
    "data_criacao_cartao": ("timestamp", "cartao.data_criacao, YYYY-MM-DD HH:MM:SS"),
    "tipo_conta": ("text", "conta.tipo: corrente, poupanca, salario or investimento"),
    "data_criacao_conta": ("timestamp", "conta.data_criacao, YYYY-MM-DD HH:MM:SS"),
}
CSV_COLUMNS = tuple(CSV_CONTRACT)
HEADER = ",".join(CSV_COLUMNS) + "\n"
INDEX_FILE = "_index.csv"
INDEX_COLUMNS = ("client_id", "nome_associado", "sobrenome_associado", "file", "rows")


def slug(text: str) -> str:
    """'João da Silva' -> 'joao-da-silva' (ASCII, lower case, accents folded, hyphen-separated)."""
    return re.sub(r"[^a-z0-9]+", "-", fold_ascii(text).lower()).strip("-")[:80].rstrip("-")


def client_file_name(client_id: int, nome: str, sobrenome: str) -> str:
    return f"{client_id:08d}_{slug(f'{nome} {sobrenome}') or 'sem-nome'}.csv"


@dataclass(frozen=True)
class ClientFile:
    """One row of _index.csv: a client and its file."""

    client_id: int
    nome: str
    sobrenome: str
    file: str
    rows: int


def csv_bytes(columns: Iterable[str], rows: Iterable[Iterable]) -> bytes:
    """A header row and rows as UTF-8 CSV with "\n" line ends: the bytes of each version's records."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def index_bytes(files: list[ClientFile]) -> bytes:
    """_index.csv's bytes."""
    return csv_bytes(INDEX_COLUMNS, ((f.client_id, f.nome, f.sobrenome, f.file, f.rows) for f in files))


def parse_index(data: bytes) -> dict[str, ClientFile]:
    """_index.csv by file name."""
    rows = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    next(rows)  # INDEX_COLUMNS
    return {file: ClientFile(int(client_id), nome, sobrenome, file, int(count))
            for client_id, nome, sobrenome, file, count in rows}
