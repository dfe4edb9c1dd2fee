"""The driver's per-client work, on Arrow tables: the export's ranges of clients (one Spark task each:
every client once, in order, about equal in movements) and the matching of a version's records to the
snapshot's clients."""

import random

import pyarrow as pa
import pyarrow.compute as pc

from desafio_dagster.core.export.extract import FILE_WEIGHT, MIN_TASK_WORK, ROWS_PER_PARTITION, Snapshot, partitions_for
from desafio_dagster.core.output.version import FIGURES_SCHEMA


def snapshot(rows: list[int]) -> Snapshot:
    ids = [10 + 3 * i for i in range(len(rows))]  # not consecutive
    figures = pa.table([pa.array(ids, pa.int64()), pa.array([f"{i:08d}_x.csv" for i in ids]), pa.array(rows, pa.int64()),
                        pa.array([0] * len(rows), pa.decimal128(18, 2)), pa.array([0] * len(rows), pa.int64())],
                       schema=FIGURES_SCHEMA)
    return Snapshot("snapshot", {}, figures, {}, 0.0)


def test_ranges_hold_every_client_once_in_order_and_about_equal_in_work():
    generator = random.Random(7)
    for _ in range(200):
        rows = [generator.choice([0, 0, 1, 3, 10, 200]) for _ in range(generator.randint(1, 80))]
        parts = generator.randint(1, 12)
        snap = snapshot(rows)
        ids = snap.clients["client_id"].to_pylist()
        only = sorted(generator.sample(ids, generator.randint(1, len(ids)))) if generator.random() < 0.5 else None
        ranges = snap.client_ranges(parts, None if only is None else pa.array(only, pa.int64()))
        chosen = ids if only is None else only
        assert 1 <= len(ranges) <= parts
        covered = [i for r in ranges for i in chosen if r.first <= i <= r.last]
        assert covered == chosen, "every client once, in order"
        if only is not None:
            assert [i for r in ranges for i in r.ids] == chosen
        weights = {i: r + FILE_WEIGHT for i, r in zip(ids, rows)}  # its movements and its file
        share = sum(weights[i] for i in chosen) / parts
        heaviest = max(weights[i] for i in chosen)
        for r in ranges:  # each range stops once it reaches its share: at most one client past it
            assert sum(weights[i] for i in chosen if r.first <= i <= r.last) <= share + heaviest


def test_partitions_are_sized_by_the_movements_and_fill_the_task_slots_when_the_files_are_worth_it():
    assert partitions_for(5_000, 60, task_slots=2) == 1, "a small export: one task"
    files = 10_000  # an incremental export at 1M clients: few movements, many files
    assert partitions_for(100_000, files, task_slots=2) == 2, "both cores write"
    assert partitions_for(100_000, files, task_slots=2, max_connections=1) == 1, "one connection: one task"
    assert partitions_for(MIN_TASK_WORK - 1, 0, task_slots=8) == 1
    assert partitions_for(10 * ROWS_PER_PARTITION, 1_000_000, task_slots=2) == 10, "a full export: by its movements"


def test_no_clients_no_ranges():
    assert snapshot([]).client_ranges(4) == []
    assert snapshot([5, 0]).client_ranges(4, pa.array([], pa.int64())) == []


def test_a_version_s_records_are_matched_to_the_clients_in_order_or_not():
    """layout.matched: the rows of a record for each file, whether the record is in the same order
    (one comparison) or not (a lookup), with a row of nulls where it has none."""
    from desafio_dagster.core.output.layout import matched

    record = pa.table({"file": ["a.csv", "b.csv", "c.csv"], "rows": pa.array([1, 2, 3], pa.int64())})
    assert matched(pa.array(["a.csv", "b.csv", "c.csv"]), record).equals(record)
    shuffled = matched(pa.array(["c.csv", "x.csv", "a.csv"]), record)
    assert shuffled.to_pylist() == [{"file": "c.csv", "rows": 3}, {"file": None, "rows": None}, {"file": "a.csv", "rows": 1}]
    assert matched(pa.array(["a.csv", None, "c.csv"]), record)["rows"].to_pylist() == [1, None, 3], \
        "a null key has no row, even where the others line up"


def test_records_that_lack_the_clients_added_since_are_matched_as_by_a_lookup():
    """layout.matched, keys that extend the record's (clients added since its version): rows of nulls for the
    added keys, the same table as a lookup gives; each of several records aligned, in or out of order."""
    from desafio_dagster.core.output.layout import matched

    ids = list(range(1, 1001))
    record = pa.table({"client_id": pa.array(ids, pa.int64()), "rows": pa.array([i % 7 for i in ids], pa.int64())})
    shuffled = record.take(pa.array(random.Random(1).sample(range(len(ids)), len(ids))))
    for keys in (pa.chunked_array([ids, [1001, 1002]], pa.int64()), pa.array([*ids[:-1], 1002], pa.int64()),
                 pa.array(ids[:500], pa.int64())):
        by_lookup = record.take(pc.index_in(keys, value_set=record["client_id"]))
        assert matched(keys, record, key="client_id").equals(by_lookup)
        both = matched(keys, record, shuffled, key="client_id")
        assert [each.to_pylist() for each in both] == [by_lookup.to_pylist()] * 2
    assert matched(pa.array([*ids, 1001]), record, key="client_id")["rows"].to_pylist()[-2:] == [1000 % 7, None]


def test_the_files_two_versions_do_not_share_are_found_by_client_and_version_as_by_name():
    """layout.unshared_files: a file is the version that wrote it and its name. Client files are compared by
    client id and version; the answer is the one the names give, whether a client's file was rewritten in
    another version, renamed, added or gone; any other name is compared by name."""
    from desafio_dagster.core.output.layout import unshared_files

    def by_name(left: pa.Table, right: pa.Table) -> tuple[list[str], list[str]]:
        keys = [set(zip(t["written_in"].to_pylist(), t["file"].to_pylist())) for t in (left, right)]
        return ([f for v, f in zip(left["written_in"].to_pylist(), left["file"].to_pylist()) if (v, f) not in keys[1]],
                [f for v, f in zip(right["written_in"].to_pylist(), right["file"].to_pylist()) if (v, f) not in keys[0]])

    rng = random.Random(7)
    had = {i: (f"{i:08d}_ana.csv", rng.choice(["v-1", "v-2"])) for i in range(1, 3001)}
    wanted = {i: held for i, held in had.items() if i % 97}  # gone
    for i in rng.sample(sorted(wanted), 200):
        wanted[i] = (wanted[i][0], "v-3")  # rewritten since
    for i in rng.sample(sorted(wanted), 50):
        wanted[i] = (f"{i:08d}_ana-maria.csv", "v-3")  # renamed
    wanted.update({i: (f"{i:08d}_novo.csv", "v-3") for i in range(3001, 3011)})  # added

    def table(files: dict[int, tuple[str, str]]) -> pa.Table:
        return pa.table({"file": [f for f, _ in files.values()], "written_in": [v for _, v in files.values()]})

    left, right = table(had), table(wanted)
    stale, missing = unshared_files(left, right)
    assert (stale, missing) == by_name(left, right)
    changed = sum(had[i] != held for i, held in wanted.items() if i in had)
    assert (len(stale), len(missing)) == (30 + changed, changed + 10) and changed > 200  # 30 gone, 10 added
    odd = pa.concat_tables([right, pa.table({"file": ["notes.txt"], "written_in": ["v-3"]})])
    assert unshared_files(left, odd) == by_name(left, odd) and "notes.txt" in unshared_files(left, odd)[1]
    # Past 99,999,999 a client's name has more digits: 123456789 is not client 12345678.
    large = pa.table({"file": ["12345678_ana.csv", "123456789_bia.csv"], "written_in": ["v-1", "v-1"]})
    assert unshared_files(large.slice(0, 1), large.slice(1)) == (["12345678_ana.csv"], ["123456789_bia.csv"])


def test_a_client_file_name_gives_its_client_id_and_any_other_name_none():
    from desafio_dagster.core.output.layout import client_file_names, client_ids

    ids = [1, 42, 99_999_999, 123_456_789, 2**53]
    names = client_file_names(pa.array(ids, pa.int64()), pa.array(["Ana"] * 5), pa.array(["Silva"] * 5))
    assert client_ids(names).to_pylist() == ids
    others = ["_index.csv", "notes.txt", "1234567_a.csv", "12345678a.csv", ".stale"]
    assert client_ids(pa.array(others)).to_pylist() == [None] * len(others)
