"""Reading written files back for the audit: the one-pass reader agrees with reading each file."""

from decimal import Decimal

from desafio_dagster.core.audit import scan_file, scan_files
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
