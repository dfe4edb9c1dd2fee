"""The S3 store's cleanup when versions hold files by reference (a real S3 server, moto's; no Spark): a
chain of incremental versions, each holding files that earlier versions wrote. Whatever is removed, every
file that a kept version's records name stays; everything else goes."""

import json
import time

import pyarrow as pa
import pytest

from desafio_dagster.core.output.store import PublishError, open_store
from desafio_dagster.core.output.version import (
    EARLIER_NAMES,
    FORMAT_FILE,
    HELD_SCHEMA,
    INDEX_FILE,
    MANIFEST_FILE,
    READBACK_FILE,
    record_bytes,
)
from desafio_dagster.core.settings import OutputLocation
from desafio_dagster_tests.fault_proxies import HttpFaultProxy

BASE = "exports/movements_csv"
RECORDS = {INDEX_FILE, MANIFEST_FILE, FORMAT_FILE, READBACK_FILE}
EARLIER_RECORDS = {INDEX_FILE, FORMAT_FILE, *EARLIER_NAMES.values()}  # as an earlier release wrote them: CSV


def _version(s3, name: str, held: dict[str, str], earlier: bool = False) -> None:
    """A version as the export leaves it: the files it wrote, its records, and _readback.arrow naming the
    version that holds each of its files (held: file -> holder); earlier: its records as an earlier release
    wrote them (_snapshot.csv and _readback.csv)."""
    for file, holder in held.items():
        if holder == name:
            s3.client().put_object(Bucket=s3.bucket, Key=f"{BASE}/{name}/{file}", Body=f"{name} {file}\n".encode())
    manifest, readback = (EARLIER_NAMES[MANIFEST_FILE], EARLIER_NAMES[READBACK_FILE]) if earlier else (MANIFEST_FILE, READBACK_FILE)
    for record in (INDEX_FILE, manifest, FORMAT_FILE):
        s3.client().put_object(Bucket=s3.bucket, Key=f"{BASE}/{name}/{record}", Body=b"record\n")
    rows = "".join(f"{file},{holder}\n" for file, holder in sorted(held.items()))
    held_table = pa.table([pa.array(sorted(held)), pa.array([held[f] for f in sorted(held)])], schema=HELD_SCHEMA)
    s3.client().put_object(Bucket=s3.bucket, Key=f"{BASE}/{name}/{readback}",
                           Body=f"file,written_in\n{rows}".encode() if earlier else record_bytes(held_table, HELD_SCHEMA))


def _files(s3) -> dict[str, set[str]]:
    """The objects under the store, by prefix."""
    found: dict[str, set[str]] = {}
    for key in s3.keys(f"{BASE}/"):
        prefix, _, file = key.removeprefix(f"{BASE}/").partition("/")
        found.setdefault(prefix, set()).add(file)
    return found


@pytest.mark.parametrize("upgraded_after", [0, 1, 4], ids=["arrow_records", "upgraded_after_v1", "records_of_an_earlier_release"])
def test_a_chain_of_incremental_versions_keeps_exactly_what_the_kept_versions_hold(s3, upgraded_after):
    """The versions up to upgraded_after (v1, v2, ...) have an earlier release's records (CSV): an upgrade in the
    middle of a chain, whose Arrow versions hold files of CSV ones, must not lose a file either."""
    store = open_store(OutputLocation(bucket=s3.bucket, prefix="exports"), "movements_csv")
    v1, v2, v3, v4 = versions = ".v-1", ".v-2", ".v-3", ".v-4"
    earlier = set(versions[:upgraded_after])

    def version(name: str, held: dict[str, str]) -> None:
        _version(s3, name, held, name in earlier)

    def records(name: str) -> set[str]:
        return EARLIER_RECORDS if name in earlier else RECORDS

    version(v1, {"a.csv": v1, "b.csv": v1, "c.csv": v1, "d.csv": v1})  # a full export
    version(v2, {"a.csv": v1, "b.csv": v2, "c.csv": v1, "d.csv": v1})  # b rewritten
    store.remove_leftovers(keep={v2, v1})
    assert _files(s3) == {v1: {"a.csv", "b.csv", "c.csv", "d.csv"} | records(v1), v2: {"b.csv"} | records(v2)}

    # The next run starts: only v2 is kept. v1 is retired: the file only it held goes, then its records.
    store.remove_leftovers(keep={v2})
    assert _files(s3) == {v1: {"a.csv", "c.csv", "d.csv"}, v2: {"b.csv"} | records(v2)}
    version(v3, {"a.csv": v1, "b.csv": v2, "c.csv": v3, "d.csv": v1})  # c rewritten
    store.remove_leftovers(keep={v3, v2})
    assert _files(s3) == {v1: {"a.csv", "c.csv", "d.csv"}, v2: {"b.csv"} | records(v2), v3: {"c.csv"} | records(v3)}

    # A killed run's version (no records) goes whole; a retired version that cleanup already cut short
    # (its records but _readback.arrow gone) is retired again.
    s3.client().put_object(Bucket=s3.bucket, Key=f"{BASE}/.v-killed/e.csv", Body=b"half\n")
    s3.client().delete_object(Bucket=s3.bucket, Key=f"{BASE}/{v2}/{INDEX_FILE}")
    store.remove_leftovers(keep={v3})
    assert _files(s3) == {v1: {"a.csv", "d.csv"}, v2: {"b.csv"}, v3: {"c.csv"} | records(v3)}

    # A full export holds nothing elsewhere: once v3 is retired, every earlier prefix goes.
    version(v4, {"a.csv": v4, "b.csv": v4, "c.csv": v4, "d.csv": v4})
    store.remove_leftovers(keep={v4, v3})
    assert set(_files(s3)) == {v1, v2, v3, v4}
    store.remove_leftovers(keep={v4})
    assert _files(s3) == {v4: {"a.csv", "b.csv", "c.csv", "d.csv"} | records(v4)}


def test_the_rejected_version_keeps_its_own_files(s3):
    store = open_store(OutputLocation(bucket=s3.bucket, prefix="exports"), "movements_csv")
    _version(s3, ".v-1", {"a.csv": ".v-1", "b.csv": ".v-1"})
    _version(s3, ".v-2", {"a.csv": ".v-1", "b.csv": ".v-2"})
    s3.client().put_object(Bucket=s3.bucket, Key=f"{BASE}/_rejected", Body=b".v-2\n")
    store.remove_leftovers(keep={".v-1"})
    assert _files(s3)[".v-2"] == {"b.csv"} | RECORDS


def _lease(s3, version: str, seconds: float) -> None:
    """A lease as an export writes it (a test rewrites one with seconds=0: S3's clock then finds it lapsed)."""
    s3.client().put_object(Bucket=s3.bucket, Key=f"{BASE}/{version}/_lease",
                           Body=json.dumps({"seconds": seconds, "holder": "a test"}).encode())


def test_a_version_being_written_is_spared_while_its_lease_is_live_and_removed_once_it_lapses(s3):
    store = open_store(OutputLocation(bucket=s3.bucket, prefix="exports"), "movements_csv")
    _version(s3, ".v-1", {"a.csv": ".v-1"})
    with store.leased(".v-2"):  # another export, writing
        s3.client().put_object(Bucket=s3.bucket, Key=f"{BASE}/.v-2/a.csv", Body=b"being written\n")
        store.remove_leftovers(keep={".v-1"})
        assert _files(s3)[".v-2"] == {"a.csv", "_lease"}
    assert _files(s3)[".v-2"] == {"a.csv"}, "the lease is deleted once the export is done with the version"
    store.remove_leftovers(keep={".v-1"})
    assert ".v-2" not in _files(s3)

    # A killed run leaves its lease: spared until the lease lapses (by its own seconds, on S3's clock).
    _lease(s3, ".v-3", 600)
    s3.client().put_object(Bucket=s3.bucket, Key=f"{BASE}/.v-3/b.csv", Body=b"half\n")
    store.remove_leftovers(keep={".v-1"})
    assert _files(s3)[".v-3"] == {"b.csv", "_lease"}
    _lease(s3, ".v-3", 0)
    store.remove_leftovers(keep={".v-1"})
    assert set(_files(s3)) == {".v-1"}


def test_a_lease_is_renewed_while_held_and_a_lapsed_one_publishes_nothing(s3, monkeypatch):
    store = open_store(OutputLocation(bucket=s3.bucket, prefix="exports"), "movements_csv")
    store.lease_seconds = 0.5  # renewed every 0.05 s
    lease = f"/{s3.bucket}/{BASE}/.v-1/_lease"
    with HttpFaultProxy(s3.endpoint, lambda call: None) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        with store.leased(".v-1"):
            deadline = time.monotonic() + 60
            while proxy.calls[("PUT", lease, "")] < 3:  # written, then renewed twice
                assert time.monotonic() < deadline, proxy.calls
                time.sleep(0.05)
        assert proxy.calls[("DELETE", lease, "")] == 1
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)

    store.lease_seconds = 600
    with store.leased(".v-2"):
        _lease(s3, ".v-2", 0)  # as if no renewal had come through for longer than the lease
        with pytest.raises(PublishError, match=r"the lease of s3://.*/\.v-2 lapsed before its publication"):
            store.publish(".v-2", replacing=None)
    assert s3.get(f"{BASE}/_published") is None
