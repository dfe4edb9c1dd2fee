"""Write–audit–publish: what a version of the per-client CSVs must match before readers see it,
and after. Pure: no Dagster.

The expected figures come from the source snapshot itself (a SQL aggregate over the four tables in
the extract's transaction), never from the flat view, so a wrong join cannot agree with itself. The
actual figures come from reading the written files back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from desafio_dagster.core.errors import DesafioError
from desafio_dagster.core.output.layout import (
    CSV_COLUMNS,
    HEADER,
    aligned,
    client_file_names,
    matched,
)
from desafio_dagster.core.output.version import FIGURES_SCHEMA, SCAN_SCHEMA

_SHOWN = 5  # clients named in a message
_LONG_DIGIT_RUN = b"0" * 12  # an unmasked card number, once every digit is mapped to "0"
_DIGITS_TO_ZERO = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_VALUE = "vlr_transacao_movimento"
_HEADER = HEADER.encode()


class AuditError(DesafioError):
    """A written version broke a rule: it was not published."""




def expected_figures(figures: pa.Table) -> pa.Table:
    """Every client's figures (FIGURES_SCHEMA), from a table of id, nome, sobrenome, movements, total (the
    sum of its values) and fingerprint, sorted by id."""
    files = client_file_names(figures["id"], figures["nome"], figures["sobrenome"])
    return pa.table([figures["id"], files, figures["movements"], figures["total"], figures["fingerprint"]],
                    schema=FIGURES_SCHEMA)


@dataclass(frozen=True)
class FileScan:
    """A written file read back: header, rows and value sum (None where it does not parse as CSV),
    and whether a field holds a run of 12 or more digits."""

    header_ok: bool
    rows: int | None
    total: Decimal | None
    long_digit_run: bool


_READ = dict(
    read_options=pa_csv.ReadOptions(column_names=list(CSV_COLUMNS), use_threads=False),
    parse_options=pa_csv.ParseOptions(newlines_in_values=True),
    convert_options=pa_csv.ConvertOptions(include_columns=[_VALUE], column_types={_VALUE: pa.decimal128(18, 2)}),
)


def _values(body: bytes) -> pa.Array:
    """vlr_transacao_movimento of every record in CSV bytes, read with Arrow's CSV reader (not the
    writer's code); raises pa.ArrowInvalid where they do not parse."""
    return pa_csv.read_csv(pa.py_buffer(body), **_READ)[_VALUE].combine_chunks() if body else pa.array([], pa.decimal128(18, 2))


def _header_ok(data: bytes) -> bool:
    """The first line is the contract's header (without copying the rest of the file)."""
    return data.startswith(_HEADER) or data == _HEADER[:-1]


def _long_digit_run(data: bytes) -> bool:
    # A run of digits never crosses a comma, quote or newline, so scanning the bytes is scanning every field.
    return _LONG_DIGIT_RUN in data.translate(_DIGITS_TO_ZERO)


def _rows_and_total(body: bytes) -> tuple[int | None, Decimal | None]:
    """A file's rows and value sum, from its bytes after the header (None, None where they do not parse)."""
    try:
        values = _values(body)
    except pa.ArrowInvalid:
        return None, None
    return len(values), pc.sum(values).as_py() or Decimal(0)


def scan_file(path: Path | str) -> FileScan:
    """Read one client file back."""
    return scan_bytes(Path(path).read_bytes())


def scan_bytes(data: bytes) -> FileScan:
    """One client file's bytes, read back."""
    return FileScan(_header_ok(data), *_rows_and_total(data.partition(b"\n")[2]), _long_digit_run(data))


def scan_files(paths: list[Path], batch_bytes: int = 16 << 20) -> pa.Table:
    """Read many local client files back (see scan_many)."""
    return scan_many((Path(path).read_bytes() for path in paths), batch_bytes)


def scan_many(datas: Iterable[bytes], batch_bytes: int = 16 << 20) -> pa.Table:
    """Many client files' bytes read back, in order, parsed in one pass where that is exact: a body without
    a quote has one record per line (the generator writes none that need quoting), so the records of
    the joined bodies split back into files by line counts. Files with quotes, a body not ending in
    a newline, or a batch that does not parse, are parsed one by one. At most batch_bytes are held.
    Returns one row per file (SCAN_SCHEMA), in order."""
    tables: list[pa.Table] = []
    batch: list[bytes] = []
    held = 0
    for data in datas:
        batch.append(data)
        held += len(batch[-1])
        if held >= batch_bytes:
            tables.append(_scan_batch(batch))
            batch, held = [], 0
    if batch:
        tables.append(_scan_batch(batch))
    return pa.concat_tables(tables) if tables else SCAN_SCHEMA.empty_table()


def _scan_batch(datas: list[bytes]) -> pa.Table:
    bodies = [data.partition(b"\n")[2] for data in datas]
    counts = np.array([body.count(b"\n") for body in bodies], np.int64)
    simple = np.flatnonzero([b'"' not in body and (not body or body.endswith(b"\n")) for body in bodies])
    rows: list[int | None] = [None] * len(datas)
    totals: list[Decimal | None] = [None] * len(datas)
    done = np.zeros(len(datas), bool)
    try:
        values = _values(b"".join(bodies[i] for i in simple))
    except pa.ArrowInvalid:
        values = None
    if values is not None and len(values) == counts[simple].sum():
        # Each file's sum from the running sum of all values, in cents (exact), no call per file.
        cents = np.r_[0, np.cumsum(pc.multiply(values, 100).cast(pa.int64()).fill_null(0).to_numpy())]
        bounds = np.r_[0, np.cumsum(counts[simple])]
        for i, count, total in zip(simple.tolist(), counts[simple].tolist(), (cents[bounds[1:]] - cents[bounds[:-1]]).tolist()):
            rows[i], totals[i] = count, Decimal(total).scaleb(-2)
        done[simple] = True
    for i in np.flatnonzero(~done).tolist():  # quoted fields, no final newline, or no parse: one by one
        rows[i], totals[i] = _rows_and_total(bodies[i])
    return pa.table([pa.array([_header_ok(data) for data in datas], pa.bool_()), pa.array(rows, pa.int64()),
                     pa.array(totals, pa.decimal128(18, 2)), pa.array([_long_digit_run(data) for data in datas], pa.bool_())],
                    schema=SCAN_SCHEMA)


@dataclass(frozen=True)
class Finding:
    rule: str
    passed: bool
    detail: str  # e.g. "3 files: a.csv, b.csv, c.csv"
    files: tuple[str, ...]  # the files that break the rule
    violations: int  # files that break it; for total_rows_match_snapshot, rows too many or too few


RULES = {
    "one_file_per_client": "Every client of the snapshot has exactly one file, named by the contract, and nothing else is there",
    "client_totals_match_snapshot": "Per client, row count and sum of vlr_transacao_movimento equal the snapshot's",
    "headers_match_contract": "Every file starts with the contract's header row",
    "card_numbers_masked": "With masking on, no field holds a run of 12 or more digits (an unmasked card number)",
    "total_rows_match_snapshot": "Rows in all files equal the movements of the exported snapshot",
}


def _finding(rule: str, files: list[str], what: str) -> Finding:
    shown = ", ".join(files[:_SHOWN]) + (f" and {len(files) - _SHOWN} more" if len(files) > _SHOWN else "")
    return Finding(rule, not files, f"{len(files)} {what}: {shown}" if files else "none", tuple(files), len(files))


def audit(scans: pa.Table, expected: pa.Table, masked: bool) -> list[Finding]:
    """Every rule of RULES, judged on the files read back (file, then SCAN_SCHEMA's columns) against the
    snapshot's figures (FIGURES_SCHEMA), in Arrow."""
    lined_up = aligned(expected["file"], scans["file"])  # as a rule: then no file is unexpected, none missing
    read = scans if lined_up else matched(expected["file"], scans)  # each expected file's scan (nulls where none)
    missing = pc.is_null(read["file"])
    differs = pc.or_(pc.fill_null(pc.not_equal(expected["rows"], read["rows"]), True),  # no rows: does not parse
                     pc.fill_null(pc.not_equal(expected["vlr_transacao_total"], read["vlr_transacao_total"]), True))

    def names(table: pa.Table, mask: pa.ChunkedArray) -> list[str]:
        return sorted(table.filter(mask)["file"].to_pylist())

    unexpected = [] if lined_up else \
        names(scans, pc.invert(pc.is_in(scans["file"], value_set=expected["file"])))  # 0.4-0.8 s at 1M here
    mismatched = names(expected, pc.and_(pc.invert(missing), differs))
    missing = names(expected, missing)
    rows = pc.sum(scans["rows"]).as_py() or 0
    expected_rows = pc.sum(expected["rows"]).as_py() or 0
    return [
        _finding("one_file_per_client", [f"missing {n}" for n in missing] + [f"unexpected {n}" for n in unexpected],
                 "files missing or unexpected"),
        _finding("client_totals_match_snapshot", mismatched,
                 "clients whose rows or value sum differ from the snapshot"),
        _finding("headers_match_contract", names(scans, pc.invert(scans["header_ok"])),
                 "files without the contract's header"),
        _finding("card_numbers_masked", names(scans, scans["long_digit_run"]) if masked else [],
                 "files with a run of 12 or more digits while masking is on"),
        Finding("total_rows_match_snapshot", rows == expected_rows,
                f"{rows:,} rows in the files, {expected_rows:,} in the snapshot", (), abs(rows - expected_rows)),
    ]


def failures(findings: list[Finding]) -> str:
    """The failed rules, each with the first files that break it; empty if every rule passed."""
    return "; ".join(f"audit rule {f.rule} failed, {f.detail}" for f in findings if not f.passed)
