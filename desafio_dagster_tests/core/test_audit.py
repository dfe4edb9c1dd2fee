"""Reading written files back for the audit: the one-pass reader agrees with reading each file."""

from decimal import Decimal

import pyarrow as pa

from desafio_dagster.core.export.audit import RULES, audit, scan_file, scan_files
from desafio_dagster.core.output.layout import HEADER
from desafio_dagster.core.output.version import FIGURES_SCHEMA, SCAN_SCHEMA

ROW = "Ana,Silva,33,{value},Compra,2023-01-01 10:00:00,************1234,ANA SILVA,2022-01-01 00:00:00,corrente,2021-01-01 00:00:00\n"


def test_the_one_pass_reader_agrees_with_reading_each_file(tmp_path):
    files = {
        "plain.csv": HEADER + ROW.format(value="-12.50") + ROW.format(value="3.10"),
        "header_only.csv": HEADER,
        "quoted.csv": HEADER + ROW.format(value="1.00").replace("Compra", '"Compra, ""Loja""\nlinha 2"'),
        "no_final_newline.csv": HEADER + ROW.format(value="2.00").rstrip("\n"),
        "unmasked.csv": HEADER + ROW.format(value="4.00").replace("************1234", "4111111111111111"),
        "renamed_header.csv": HEADER.replace("nome_associado", "nome", 1) + ROW.format(value="5.00"),
        "plain_again.csv": HEADER + ROW.format(value="0.01"),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    paths = [tmp_path / name for name in files]
    scans = scan_files(paths)
    assert scans.to_pylist() == [_row(scan_file(path)) for path in paths]
    assert scan_files(paths, batch_bytes=300).equals(scans), "in batches of a few files each"
    by_name = dict(zip(files, scans.to_pylist()))
    assert (by_name["plain.csv"]["rows"], by_name["plain.csv"]["vlr_transacao_total"]) == (2, Decimal("-9.40"))
    assert [by_name[n]["rows"] for n in ("header_only.csv", "quoted.csv", "no_final_newline.csv")] == [0, 1, 1]
    assert by_name["unmasked.csv"]["long_digit_run"] and not by_name["plain.csv"]["long_digit_run"]
    assert not by_name["renamed_header.csv"]["header_ok"] and by_name["plain_again.csv"]["header_ok"]


def _row(scan) -> dict:
    return {"header_ok": scan.header_ok, "rows": scan.rows, "vlr_transacao_total": scan.total,
            "long_digit_run": scan.long_digit_run}


def test_a_file_that_does_not_parse_is_told_apart(tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(HEADER + ROW.format(value="1.00"))
    bad.write_text(HEADER + "only,three,fields\n")
    scans = scan_files([good, bad])
    assert scans["rows"].to_pylist() == [1, None] and scans["vlr_transacao_total"][1].as_py() is None


def test_every_rule_judges_the_files_against_the_snapshot():
    expected = pa.Table.from_pylist([
        {"client_id": cid, "file": name, "rows": rows, "vlr_transacao_total": Decimal(total), "fingerprint": 0}
        for cid, name, rows, total in [(1, "a.csv", 2, "3.00"), (2, "b.csv", 1, "1.00"), (3, "c.csv", 0, "0")]],
        schema=FIGURES_SCHEMA)
    good = _scans({"a.csv": (True, 2, "3.00", False), "b.csv": (True, 1, "1.00", False), "c.csv": (True, 0, "0", False)})
    assert {f.rule for f in audit(good, expected, masked=True)} == set(RULES)
    assert all(f.passed for f in audit(good, expected, masked=True))

    bad = _scans({"a.csv": (True, 3, "4.00", True), "c.csv": (False, 0, "0", False), "x.csv": (True, 1, "0", False),
                  "y.csv": (True, None, None, False)})
    findings = {f.rule: f for f in audit(bad, expected, masked=True)}
    assert {rule for rule, f in findings.items() if not f.passed} == set(RULES)
    assert findings["one_file_per_client"].files == ("missing b.csv", "unexpected x.csv", "unexpected y.csv")
    assert findings["client_totals_match_snapshot"].files == ("a.csv",)
    assert findings["headers_match_contract"].files == ("c.csv",)
    assert findings["card_numbers_masked"].files == ("a.csv",)
    total = findings["total_rows_match_snapshot"]
    assert (total.violations, total.detail) == (1, "4 rows in the files, 3 in the snapshot")
    assert audit(bad, expected, masked=False)[3].passed, "long digit runs are fine when masking is off"
    swapped = _scans({"a.csv": (True, 2, "3.00", False), "x.csv": (True, 1, "1.00", False), "c.csv": (True, 0, "0", False)})
    assert audit(swapped, expected, masked=True)[0].files == ("missing b.csv", "unexpected x.csv"), \
        "as many files as clients, one of them not a client's"
    unparsed = _scans({"a.csv": (True, None, None, False), "b.csv": (True, 1, "1.00", False), "c.csv": (True, 0, "0", False)})
    assert [f.files for f in audit(unparsed, expected, masked=True) if not f.passed][0] == ("a.csv",), \
        "a file that does not parse matches no figures"


def _scans(by_file: dict[str, tuple]) -> pa.Table:
    rows = [dict(zip(["file", *SCAN_SCHEMA.names], (name, ok, rows, None if total is None else Decimal(total), run)))
            for name, (ok, rows, total, run) in by_file.items()]
    return pa.Table.from_pylist(rows, schema=pa.schema([("file", pa.string()), *SCAN_SCHEMA]))


def test_many_files_are_read_back_by_several_processes_in_order(tmp_path, monkeypatch):
    from desafio_dagster.core.output import store

    for number in range(7):
        (tmp_path / f"{number}.csv").write_text(HEADER + ROW.format(value=f"{number}.25") * number)
    files = [f"{number}.csv" for number in range(7)]
    monkeypatch.setattr(store, "_SCAN_CHUNK", 2)  # four chunks, read by spawned processes
    scans = store.LocalStore(tmp_path.parent, "unused").scan(tmp_path.name, files)
    assert scans.equals(scan_files([tmp_path / f for f in files]))
    assert scans["rows"].to_pylist() == list(range(7))
    assert [t.as_py() for t in scans["vlr_transacao_total"]] == [Decimal(f"{n}.25") * n for n in range(7)]
