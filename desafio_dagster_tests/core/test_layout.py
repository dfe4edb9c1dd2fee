"""The contract's file names, computed vectorised (Arrow), against an independent oracle; the records'
CSV against Python's csv module."""

import csv
import io
import random
from decimal import Decimal

import pyarrow as pa
import pytest

from desafio_dagster.core.output.layout import client_file_names, in_order, read_table, table_bytes
from desafio_dagster.core.source.fakedata import GenerationSpec, generate
from desafio_dagster_tests.helpers import oracle_slug


def client_file_name(client_id: int, nome: str, sobrenome: str) -> str:
    return client_file_names(pa.array([client_id], pa.int64()), pa.array([nome]), pa.array([sobrenome]))[0].as_py()


TRICKY = [("João", "da Silva"), ("Ærø", "Łódź"), ("!!", "??"), ("", ""), ("  Zé ", "D'Ávila-Conceição"),
          ("Ana", "Müller-Lüdenscheidt"), ("O'Neil", "São João del-Rei"), ("Nguyễn", "Thị Minh Khai"),
          ("a" * 30, "b" * 30)]


def test_file_names_follow_the_contract():
    ids = list(range(1, len(TRICKY) + 1))
    names = client_file_names(pa.array(ids, pa.int64()), pa.array([n for n, _ in TRICKY]), pa.array([s for _, s in TRICKY]))
    expected = [f"{cid:08d}_{oracle_slug(nome, sobrenome) or 'sem-nome'}.csv" for cid, (nome, sobrenome) in zip(ids, TRICKY)]
    assert names.to_pylist() == expected
    assert client_file_name(42, "João", "da Silva") == "00000042_joao-da-silva.csv"
    assert client_file_name(123_456_789, "Ana", "Lima") == "123456789_ana-lima.csv"  # past 8 digits, not cut


def test_a_long_name_is_cut_at_80_characters_without_a_trailing_hyphen():
    [name] = client_file_names(pa.array([7], pa.int64()), pa.array(["x" * 79]), pa.array(["yy"])).to_pylist()
    assert name == f"00000007_{'x' * 79}.csv"


def test_every_generated_name_matches_the_oracle():
    spec = GenerationSpec(clients=3000, movements_per_card=(0, 1), seed=3)
    clients = next(iter(generate(spec))).tables()["associado"]
    names = client_file_names(clients["id"], clients["nome"], clients["sobrenome"]).to_pylist()
    assert names == [f"{cid:08d}_{oracle_slug(n, s)}.csv" for cid, n, s in
                     zip(*(clients[c].to_pylist() for c in ("id", "nome", "sobrenome")))]


@pytest.mark.parametrize("nomes", [["Ana", 'João "Jota"', "Silva, da", "linha\nquebrada"],  # Arrow compute quotes
                                   ["Ana", "João", "", "Silva da"]])  # nothing to quote: Arrow's CSV writer
def test_records_are_written_as_pythons_csv_writes_them_and_read_back_exactly(nomes):
    """_index.csv and the other records: text quoted only where it must be (as before they were written
    in Arrow), booleans as 1 and 0, nulls empty; read back with exactly the same values."""
    table = pa.table({
        "client_id": pa.array([1, 2, 3, 4], pa.int64()),
        "nome": nomes,
        "rows": pa.array([0, None, 7, 12], pa.int64()),
        "total": pa.array([Decimal("0.00"), None, Decimal("-12.50"), Decimal("3.10")], pa.decimal128(18, 2)),
        "ok": pa.array([True, False, None, True]),
        "empty": pa.array(["", "x", None, "y"]),
    })
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow("" if v is None else int(v) if isinstance(v, bool) else f"{v:.2f}" if isinstance(v, Decimal) else v
                        for v in row.values())
    assert table_bytes(table) == text.getvalue().encode()
    assert read_table(table_bytes(table), table.schema).drop(["empty"]).equals(table.drop(["empty"]))
    assert read_table(table_bytes(table), table.schema)["empty"].to_pylist() == ["", "x", "", "y"]  # no null text
    assert table_bytes(table.slice(0, 0)) == b"client_id,nome,rows,total,ok,empty\n"


def test_names_are_put_in_order_as_a_string_sort_would():
    """in_order sorts by the first 8 bytes, then checks: names alike in those bytes, shorter than 8 bytes,
    not ASCII or out of their prefix's order are still sorted as strings (Python's order, by code point)."""
    rng = random.Random(5)
    alphabet = "0123456789_-.aé"
    for _ in range(300):
        names = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(rng.randint(0, 40))]
        names += [f"{rng.randint(0, 10**9):08d}_x.csv" for _ in range(rng.randint(0, 20))]
        rng.shuffle(names)
        assert in_order(pa.array(names, pa.string())).to_pylist() == sorted(names)
        assert in_order(pa.array(names, pa.string()).slice(3)).to_pylist() == sorted(names[3:]), "a slice's own names"
    files = [f"{client:08d}_someone.csv" for client in range(10_000)] + ["_index.csv", "_readback.csv"]
    rng.shuffle(files)
    assert in_order(pa.array(files)).to_pylist() == sorted(files)
    assert in_order(pa.array(["b", None, "a"])).to_pylist() == ["a", "b", None], "nulls last, as Arrow sorts them"
