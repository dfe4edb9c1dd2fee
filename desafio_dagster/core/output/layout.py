"""The output contract of movements_csv: columns, header, file names and card masking; and the CSV every
version's records are written and read as (version.py names those records). Pure: no Dagster."""

import functools
from collections.abc import Iterable
from typing import overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

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


def masked(card_numbers: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The contract's masking of card numbers: every character but the last four replaced by '*'."""
    stars = pc.binary_repeat("*", pc.max_element_wise(pc.subtract(pc.utf8_length(card_numbers), 4), 0))
    return pc.binary_join_element_wise(stars, pc.utf8_slice_codeunits(card_numbers, -4), "")


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


def in_order(names: pa.Array) -> pa.Array:
    """Text sorted (by its UTF-8 bytes, as Arrow and Python sort it). Client file names start with 8 digits, so
    their first 8 bytes, read as one integer, nearly always order them: sorted by that (numpy: 0.2-0.35 s a
    million names here, where Arrow's string sort took 0.55-0.65 s), then checked; sorted as strings only
    where that left them out of order."""
    data = names.buffers()[2]
    if len(names) > 1 and pa.types.is_string(names.type) and data is not None and data.size and not names.null_count:
        offsets = np.frombuffer(names.buffers()[1], np.int32)[names.offset : names.offset + len(names) + 1]
        starts, lengths = offsets[:-1], np.diff(offsets)
        values = np.concatenate([np.frombuffer(data, np.uint8), np.zeros(8, np.uint8)])
        prefixes = np.zeros(len(names), np.uint64)
        for at in range(8):  # byte by byte, 0 past a name's end
            prefixes = (prefixes << np.uint64(8)) | np.where(lengths > at, values[starts + at], 0).astype(np.uint64)
        by_prefix = names.take(np.argsort(prefixes, kind="stable"))
        if is_sorted(by_prefix):
            return by_prefix
    return names.take(pc.sort_indices(names))


def is_sorted(values: pa.Array | pa.ChunkedArray) -> bool:
    """Whether values are in ascending order, none null (a linear check: a few milliseconds a million)."""
    if values.null_count:
        return False
    return len(values) < 2 or bool(pc.all(pc.less_equal(values[:-1], values[1:])).as_py())


def client_ids(files: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The client id each file name starts with (client_file_names' digits: 8, or more past 99,999,999, then
    '_'), null for any other name."""
    return pc.cast(pc.struct_field(pc.extract_regex(files, r"^(?P<id>[0-9]{8,18})_"), [0]), pa.int64())




_NEEDS_QUOTES = '[",\r\n]'  # what makes Python's csv module quote a field


def quoted(text: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Text as an RFC 4180 field: quoted, its quotes doubled, where it holds a comma, a quote or a line
    break; as it is otherwise (what Python's csv module writes). Arrow compute, vectorised; text with none of
    those characters (names and descriptions nearly always) is returned as it is after one byte search."""
    if not _may_need_quotes(text):
        return text
    quote = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
    return pc.if_else(pc.match_substring_regex(text, _NEEDS_QUOTES), quote, text)


def table_bytes(table: pa.Table) -> bytes:
    """A table as UTF-8 CSV, as Python's csv module writes it: a header row, text quoted only where needed
    (quoted), booleans as 1 and 0, nulls empty, "\n" line ends. The bytes of each version's _index.csv (and
    of the export's records in versions of an earlier release).
    Where no text needs quotes (file and version names always, names of people nearly always), Arrow's
    writer writes them (about 0.3 s a million rows here); otherwise Arrow compute quotes them (1.6 s)."""
    header = (",".join(table.column_names) + "\n").encode()
    if not table.num_rows:
        return header
    columns = [column.cast(pa.int8()) if pa.types.is_boolean(column.type) else column for column in table.columns]
    is_text = [pa.types.is_string(column.type) or pa.types.is_large_string(column.type) for column in columns]
    if not any(_may_need_quotes(column) for column, text in zip(columns, is_text) if text):
        sink = pa.BufferOutputStream()
        sink.write(header)
        pa_csv.write_csv(pa.table(columns, names=table.column_names), sink,
                         pa_csv.WriteOptions(include_header=False, quoting_style="none"))
        return sink.getvalue().to_pybytes()
    fields = []
    for column, text in zip(columns, is_text):
        field = pc.fill_null(column.cast(pa.string()), "")
        fields.append(quoted(field) if text else field)
    lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*fields, ","), "\n", "")
    lines = lines.combine_chunks().cast(pa.large_string())
    offsets = np.frombuffer(lines.buffers()[1], np.int64)[lines.offset : lines.offset + len(lines) + 1]
    return header + lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0])).to_pybytes()


def _may_need_quotes(text: pa.ChunkedArray | pa.Array) -> bool:
    """Whether a text column may hold a value that needs quotes: a search of its values' bytes (memchr), a
    tenth of a regex per value's cost. Bytes outside its values (a sliced column) can only raise a false alarm."""
    for chunk in text.chunks if isinstance(text, pa.ChunkedArray) else [text]:
        data = chunk.buffers()[2]
        values = data.to_pybytes() if data is not None else b""
        if any(char in values for char in (b",", b'"', b"\r", b"\n")):
            return True
    return False


def read_table(data: bytes, schema: pa.Schema) -> pa.Table:
    """A record written by table_bytes, with exactly schema's types (its columns that the header names; an
    empty field is an empty string in a text column and a null in any other)."""
    end = data.find(b"\n")
    header = data[: end if end >= 0 else len(data)].decode().split(",")
    return pa_csv.read_csv(pa.py_buffer(data), parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                           convert_options=pa_csv.ConvertOptions(
                               column_types=schema, strings_can_be_null=False, quoted_strings_can_be_null=False,
                               include_columns=[name for name in schema.names if name in header]))


@overload
def matched(keys: pa.ChunkedArray | pa.Array, table: pa.Table, *, key: str = "file") -> pa.Table: ...


@overload
def matched(keys: pa.ChunkedArray | pa.Array, table: pa.Table, first: pa.Table, /, *more: pa.Table,
            key: str = "file") -> list[pa.Table]: ...


def matched(keys: pa.ChunkedArray | pa.Array, table: pa.Table, *more: pa.Table, key: str = "file") -> pa.Table | list[pa.Table]:
    """table's row for each of keys, in keys' order (a row of nulls where table has none, or the key is
    null). Tables of one version are in client order, like the snapshot's figures: then they are aligned
    already (one comparison instead of a hash lookup of a million names), or aligned but for keys added at
    the end (new clients: rows of nulls appended, where a lookup and a copy of every row cost about 0.3 s a
    table at 1M). With more tables, a list: each aligned too, the lookup made once for those whose keys are
    table's (one version's records)."""
    values = table[key]
    added = len(keys) - len(values)
    if aligned(keys, values):
        def align(each: pa.Table) -> pa.Table:
            return each
    elif added > 0 and aligned(keys.slice(0, len(values)), values):
        def align(each: pa.Table) -> pa.Table:
            return pa.concat_tables([each, pa.Table.from_arrays([pa.nulls(added, f.type) for f in each.schema],
                                                                schema=each.schema)])
    else:
        at = pc.index_in(keys, value_set=values)

        def align(each: pa.Table) -> pa.Table:
            return each.take(at)
    tables = [align(each) if each is table or aligned(each[key], values) else matched(keys, each, key=key)
              for each in (table, *more)]
    return tables if more else tables[0]


def aligned(keys: pa.ChunkedArray | pa.Array, values: pa.ChunkedArray | pa.Array) -> bool:
    """Whether keys and values are equal row by row, none null (a few milliseconds a million)."""
    return len(keys) == len(values) and bool(pc.all(pc.equal(keys, values), skip_nulls=False).as_py())


def unshared_files(left: pa.Table, right: pa.Table) -> tuple[list[str], list[str]]:
    """(left's files that right lacks, right's files that left lacks), of two records of held files (file,
    written_in): a file is the version that wrote it and its name. A version writes one file per client, so
    for client files that pair is the client id and the version, compared as one integer each (0.2 s a million
    here, where a hash of a million names each way cost 0.6-2.8 s); any other name, as text."""
    tables = (left, right)
    ids = [client_ids(table["file"]) for table in tables]
    versions = pc.unique(pa.concat_arrays([pc.unique(table["written_in"]) for table in tables]))
    largest = max(pc.max(i).as_py() or 0 for i in ids)
    if any(i.null_count or t["written_in"].null_count for i, t in zip(ids, tables)) or \
            largest >= 2**62 // max(len(versions), 1):  # a name not a client's, or keys past int64
        texts = [pc.binary_join_element_wise(table["written_in"], table["file"], "/") for table in tables]
        unshared = [pc.invert(pc.is_in(texts[0], value_set=texts[1])), pc.invert(pc.is_in(texts[1], value_set=texts[0]))]
    else:
        keys = [i.to_numpy() * len(versions) + pc.index_in(t["written_in"], value_set=versions).to_numpy()
                for i, t in zip(ids, tables)]
        unshared = [pa.array(~np.isin(keys[0], keys[1])), pa.array(~np.isin(keys[1], keys[0]))]
    return pc.filter(left["file"], unshared[0]).to_pylist(), pc.filter(right["file"], unshared[1]).to_pylist()


def same(left: pa.Table, right: pa.Table, columns: Iterable[str]) -> pa.ChunkedArray:
    """For each row of two aligned tables, whether their columns are all equal (and not null)."""
    return functools.reduce(pc.and_, (pc.fill_null(pc.equal(left[c], right[c]), False) for c in columns))


