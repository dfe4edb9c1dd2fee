"""The driver's per-client work, on Arrow tables: the export's ranges of clients (one Spark task each:
every client once, in order, about equal in movements) and the matching of a version's records to the
snapshot's clients."""

import random

import pyarrow as pa

from desafio_dagster.core.export.extract import Snapshot
from desafio_dagster.core.output.version import FIGURES_SCHEMA


def snapshot(rows: list[int]) -> Snapshot:
    ids = [10 + 3 * i for i in range(len(rows))]  # not consecutive
    figures = pa.table([pa.array(ids, pa.int64()), pa.array([f"{i:08d}_x.csv" for i in ids]), pa.array(rows, pa.int64()),
                        pa.array([0] * len(rows), pa.decimal128(18, 2)), pa.array([0] * len(rows), pa.int64())],
                       schema=FIGURES_SCHEMA)
    return Snapshot("snapshot", {}, figures, {}, 0.0)


def test_ranges_hold_every_client_once_in_order_and_about_equal_in_movements():
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
        weights = {i: max(r, 1) for i, r in zip(ids, rows)}
        share = sum(weights[i] for i in chosen) / parts
        heaviest = max(weights[i] for i in chosen)
        for r in ranges:  # each range stops once it reaches its share: at most one client past it
            assert sum(weights[i] for i in chosen if r.first <= i <= r.last) <= share + heaviest


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
