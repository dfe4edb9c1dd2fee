"""Reading written files back for the audit: the one-pass reader agrees with reading each file."""

from decimal import Decimal

from desafio_dagster.core.audit import RULES, ClientFigures, FileScan, audit, scan_file, scan_files
from desafio_dagster.core.layout import HEADER

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
    assert scans == [scan_file(path) for path in paths]
    assert scan_files(paths, batch_bytes=300) == scans, "in batches of a few files each"
    by_name = dict(zip(files, scans))
    assert (by_name["plain.csv"].rows, by_name["plain.csv"].total) == (2, Decimal("-9.40"))
    assert (by_name["header_only.csv"].rows, by_name["quoted.csv"].rows, by_name["no_final_newline.csv"].rows) == (0, 1, 1)
    assert by_name["unmasked.csv"].long_digit_run and not by_name["plain.csv"].long_digit_run
    assert not by_name["renamed_header.csv"].header_ok and by_name["plain_again.csv"].header_ok


def test_a_file_that_does_not_parse_is_told_apart(tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(HEADER + ROW.format(value="1.00"))
    bad.write_text(HEADER + "only,three,fields\n")
    scans = scan_files([good, bad])
    assert (scans[0].rows, scans[1].rows, scans[1].total) == (1, None, None)


def test_every_rule_judges_the_files_against_the_snapshot():
    expected = {name: ClientFigures(cid, name, rows, Decimal(total))
                for cid, name, rows, total in [(1, "a.csv", 2, "3.00"), (2, "b.csv", 1, "1.00"), (3, "c.csv", 0, "0")]}
    good = {"a.csv": FileScan(True, 2, Decimal("3.00"), False), "b.csv": FileScan(True, 1, Decimal("1.00"), False),
            "c.csv": FileScan(True, 0, Decimal("0"), False)}
    assert {f.rule for f in audit(good, expected, masked=True)} == set(RULES)
    assert all(f.passed for f in audit(good, expected, masked=True))

    bad = {"a.csv": FileScan(True, 3, Decimal("4.00"), True), "c.csv": FileScan(False, 0, Decimal("0"), False),
           "x.csv": FileScan(True, 1, Decimal("0"), False)}
    findings = {f.rule: f for f in audit(bad, expected, masked=True)}
    assert {rule for rule, f in findings.items() if not f.passed} == set(RULES)
    assert findings["one_file_per_client"].files == ("missing b.csv", "unexpected x.csv")
    assert findings["client_totals_match_snapshot"].files == ("a.csv",)
    assert findings["headers_match_contract"].files == ("c.csv",)
    assert findings["card_numbers_masked"].files == ("a.csv",)
    total = findings["total_rows_match_snapshot"]
    assert (total.violations, total.detail) == (1, "4 rows in the files, 3 in the snapshot")
    assert audit(bad, expected, masked=False)[3].passed, "long digit runs are fine when masking is off"
