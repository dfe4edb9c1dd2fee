"""Readers of a published output, for the fault tests (the crash matrix, test_faults): what a reader finds, and
what an export left behind, locally or on S3, read without the project's export code but its store's reads."""

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from desafio_dagster.core.export.audit import audit, failures
from desafio_dagster.core.output.store import Store, twin_of
from desafio_dagster.core.output.version import (
    INDEX_FILE,
    LEASE_FILE,
    MANIFEST_FILE,
    READBACK_FILE,
    parse_index,
    parse_manifest,
    parse_readback,
)
from desafio_dagster_tests.helpers import S3, published_files, snapshot


@dataclass(frozen=True)
class LocalReader:
    folder: Path

    def snapshot(self) -> dict:
        return snapshot(self.folder)

    def published_files(self) -> dict:
        return published_files(self.folder)

    def leases(self) -> set[str]:
        return set()  # locally the output's lock keeps other exports out: no version needs a lease

    def lapse_leases(self) -> None:
        pass

    def assert_nothing_left(self, published: str, previous: str) -> None:
        """The published version, its twin (a full export's) and the previous version (kept for readers mid-read)."""
        left = {p.name for p in self.folder.parent.iterdir()} - {self.folder.name, ".movements_csv.lock"}
        assert left == {published, twin_of(published), previous}, left
        assert not list(self.folder.parent.glob(".movements_csv.v-*/.attempts")), "no task attempt left"


@dataclass(frozen=True)
class S3Reader:
    s3: S3

    def snapshot(self) -> dict:
        return self.s3.snapshot()

    def published_files(self) -> dict:
        return self.s3.published_files()

    def leases(self) -> set[str]:
        """The versions holding a lease (being written, or left by a killed run until the lease lapses)."""
        base = f"{self.s3.prefix}/movements_csv/"
        return {key.removeprefix(base).partition("/")[0] for key in self.s3.keys(base) if key.endswith(f"/{LEASE_FILE}")}

    def lapse_leases(self) -> None:
        """Every lease rewritten as lapsed (0 seconds), as if its holder had been gone for its whole duration."""
        for version in self.leases():
            self.s3.client().put_object(Bucket=self.s3.bucket, Key=f"{self.s3.prefix}/movements_csv/{version}/{LEASE_FILE}",
                                        Body=json.dumps({"seconds": 0}).encode())

    def assert_nothing_left(self, published: str, previous: str) -> None:
        """Every version prefix left is a whole version (kept for readers mid-read), or holds only files that
        a whole version's index names there (held by reference): no killed run's half-written version."""
        base = f"{self.s3.prefix}/movements_csv/"
        objects: dict[str, set[str]] = {}
        for key in self.s3.keys(base):
            prefix, _, file = key.removeprefix(base).partition("/")
            if file:
                objects.setdefault(prefix, set()).add(file)
        whole = {prefix for prefix, files in objects.items() if READBACK_FILE in files}
        referenced = {(row["version"], row["file"]) for version in whole for row in self.s3.index(version)}
        half = {prefix: files for prefix, files in objects.items()
                if prefix not in whole and not all((prefix, file) in referenced for file in files)}
        assert self.s3.published() in whole and half == {}, half


def assert_whole_and_audited(store: Store) -> None:
    """The published version as a reader finds it: every file its index names, no other, each read back and
    audited against the figures the version recorded of its snapshot."""
    version = store.published()
    index = parse_index(store.read(version, INDEX_FILE))
    records = parse_readback(store.read_record(version, READBACK_FILE))
    files = store.with_held(version, store.files(version), records).client_files()["file"].to_pylist()
    assert sorted(files) == sorted(index["file"].to_pylist())
    scans = _scan_where_held(store, version, records, files)
    assert failures(audit(scans, parse_manifest(store.read_record(version, MANIFEST_FILE)), masked=True)) == ""


def _scan_where_held(store: Store, version: str, records: pa.Table, files: list[str]) -> pa.Table:
    """Each file read back from the version that holds it (on S3, an earlier one for a file carried by reference)."""
    holders = dict(zip(records["file"].to_pylist(), records["written_in"].to_pylist()))
    holder_of = (lambda file: holders.get(file, version)) if store.by_reference else (lambda file: version)
    by_holder: dict[str, list[str]] = {}
    for file in files:
        by_holder.setdefault(holder_of(file), []).append(file)
    return pa.concat_tables([store.scan(holder, held).add_column(0, "file", pa.array(held, pa.string()))
                             for holder, held in by_holder.items()])
