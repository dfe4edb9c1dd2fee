"""The output contract of movements_csv: columns, header and file names. Pure: no Dagster."""

import re
import unicodedata

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
HEADER = ",".join(CSV_COLUMNS) + "\n"
INDEX_FILE = "_index.csv"
INDEX_COLUMNS = ("client_id", "nome_associado", "sobrenome_associado", "file", "rows")


def slug(text: str) -> str:
    """'João da Silva' -> 'joao-da-silva' (ASCII, lower case, accents folded, hyphen-separated)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:80].rstrip("-")


def client_file_name(client_id: int, nome: str, sobrenome: str) -> str:
    return f"{client_id:08d}_{slug(f'{nome} {sobrenome}') or 'sem-nome'}.csv"
