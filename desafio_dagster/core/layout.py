"""The output contract of movements_csv: columns, header and file names. Pure: no Dagster."""

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

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


def client_file_names(ids: pa.Array, nomes: pa.Array, sobrenomes: pa.Array) -> pa.Array:
    """'00000042_joao-da-silva.csv' for each client: the id zero-padded to 8 digits, then the slug of nome
    and sobrenome (ASCII, lower case, accents folded, hyphen-separated, at most 80 characters; 'sem-nome'
    if nothing is left). Arrow compute, vectorised: a million names take about a second."""
    text = pc.binary_join_element_wise(nomes, sobrenomes, " ")
    ascii_text = pc.replace_substring_regex(pc.utf8_normalize(text, "NFKD"), r"[^\x00-\x7f]", "")  # accents folded
    hyphenated = pc.utf8_trim(pc.replace_substring_regex(pc.ascii_lower(ascii_text), "[^a-z0-9]+", "-"), "-")
    slugs = pc.utf8_rtrim(pc.utf8_slice_codeunits(hyphenated, 0, 80), "-")
    slugs = pc.if_else(pc.equal(pc.utf8_length(slugs), 0), "sem-nome", slugs)
    padded = pc.utf8_lpad(pc.cast(ids, pa.string()), 8, "0")
    return pc.binary_join_element_wise(padded, pc.binary_join_element_wise(slugs, ".csv", ""), "_")


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
