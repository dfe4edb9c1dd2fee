"""Checks on the published movements_csv against the figures of the snapshot its run exported
(recorded with the materialization), never against live tables another run may have replaced;
and a warning when the source has changed since."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import psycopg
import pyarrow as pa

from desafio_dagster.core.errors import DesafioError, first_line
from desafio_dagster.core.export.audit import RULES, Finding, audit
from desafio_dagster.core.export.incremental import SLICES, todays_slice, verified_scans
from desafio_dagster.core.output.layout import client_ids
from desafio_dagster.core.output.store import Store
from desafio_dagster.core.output.version import MANIFEST_FILE, manifest_sha256, parse_manifest
from desafio_dagster.core.source import journal
from desafio_dagster.core.source.source_db import SourceDatabaseError
from desafio_dagster.defs import metadata as meta
from desafio_dagster.defs.io_managers.per_client_csv import PerClientCsvIOManager
from desafio_dagster.defs.resources.postgres import PostgresResource

ASSET = dg.AssetKey("movements_csv")
_SHOWN = 5  # changed clients named
SPECS = [
    *(dg.AssetCheckSpec(name, asset=ASSET, blocking=True, description=description) for name, description in RULES.items()),
    dg.AssetCheckSpec("source_unchanged_since_export", asset=ASSET, blocking=False,
                      description="Warns when the source tables have changed since the export read them "
                                  "(the output is older than the source)"),
]


class _NoEvidence(DesafioError):
    """The published version cannot be tied to a materialization's snapshot."""


def _published_version(instance: dg.DagsterInstance, store: Store) -> tuple[str, bytes, dict]:
    """The version the latest materialization recorded, checked against what is published (resolved
    once): its name, its _snapshot.arrow, and the materialization's metadata."""
    event = instance.get_latest_materialization_event(ASSET)
    if event is None or event.asset_materialization is None:
        raise _NoEvidence("movements_csv has never been materialized here: run the export job")
    metadata = {key: value.value for key, value in event.asset_materialization.metadata.items()}
    version = store.published()
    if version is None or store.uri(version) != metadata[meta.VERSION]:
        raise _NoEvidence(f"{store.uri()} points at {store.uri(version) if version else 'nothing'}, not at "
                          f"{metadata[meta.VERSION]}, the version the latest materialization published: the output "
                          f"was changed outside the export job")
    manifest = store.read_record(version, MANIFEST_FILE)
    if manifest_sha256(manifest) != metadata[meta.MANIFEST_SHA256]:
        raise _NoEvidence(f"the snapshot's figures in {store.uri(version)} are no longer those the export recorded: "
                          f"the output was changed outside the export job")
    return version, manifest, metadata


@dg.multi_asset_check(specs=SPECS, name="movements_csv_checks")
def movements_csv_checks(
    context: dg.AssetCheckExecutionContext,
    postgres: PostgresResource,
    csv_io_manager: dg.ResourceParam[PerClientCsvIOManager],
) -> Iterator[dg.AssetCheckResult]:
    """Read the published files back and compare them with the exported snapshot's figures."""
    try:
        store = csv_io_manager.store(ASSET.path[-1])
        version, manifest, metadata = _published_version(context.instance, store)
    except (DesafioError, OSError) as error:
        for name in RULES:
            yield dg.AssetCheckResult(check_name=name, passed=False, description=str(error))
    else:
        expected = parse_manifest(manifest)
        # The files this run wrote, and any found changed since it was written, are read again.
        checked_slice = todays_slice()
        scans, read = verified_scans(store, version, metadata.get(meta.WRITTEN_IN, version), checked_slice)
        for finding in audit(scans, expected, metadata[meta.MASKED_CARD_NUMBERS]):
            yield dg.AssetCheckResult(check_name=finding.rule, passed=finding.passed,
                                      description=None if finding.passed else f"{finding.detail}{_fix(finding)}",
                                      metadata={"violations": finding.violations, "detail": finding.detail,
                                                "files_read": read, "files_as_read_back_before": len(scans) - read,
                                                # The carried files stat'ed today: client id modulo SLICES.
                                                "slice_stat_today": f"{checked_slice} of {SLICES}"})
        yield _source_unchanged(postgres, metadata.get(meta.SOURCE_SNAPSHOT) or "", metadata.get(meta.SOURCE_FINGERPRINT) or {})
        return
    yield dg.AssetCheckResult(check_name="source_unchanged_since_export", passed=False,
                              severity=dg.AssetCheckSeverity.WARN, description="no export to compare with")


def _fix(finding: Finding) -> str:
    """How to rewrite the files a finding names (a file edited by hand since it was published: an export carries
    unchanged clients' files as recorded, so only a rewrite asked for mends it)."""
    ids = sorted(set(client_ids(pa.array(finding.files, pa.string())).drop_null().to_pylist()))
    if not ids:
        return ""
    shown = ", ".join(map(str, ids[:_SHOWN])) + (", ..." if len(ids) > _SHOWN else "")
    return (f". If they were changed after publication, rewrite them: run the export with clients: [{shown}] "
            f"(or full_refresh: true)")


def _source_unchanged(postgres: PostgresResource, snapshot: str, exported: dict) -> dg.AssetCheckResult:
    """From the change journal where the export recorded its snapshot (a query of the changes since), else
    from the tables' fingerprints (a scan of each table)."""
    db = postgres.database()
    try:
        if snapshot:
            with db.connect(purpose="checks") as conn:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot for the whole question
                changes = journal.changes_since(conn, snapshot)
            if changes is None:
                raise SourceDatabaseError("the change journal no longer covers the export's snapshot (a later export "
                                          "or a populate moved on)")
            changed = ["every client (a populate)"] if changes.everything else changes.clients[:_SHOWN].tolist()
            metadata: dict[str, Any] = {"clients_changed": "all" if changes.everything else len(changes)}
        else:
            live = db.fingerprint()
            changed = sorted(table for table in live if live[table] != exported.get(table))
            metadata = {"changed_tables": changed, "rows_now": {t: v[0] for t, v in live.items()},
                        "rows_exported": {t: v[0] for t, v in exported.items()}}
    except Exception as error:  # a warning, never a failed run: the source may be down for a while
        return dg.AssetCheckResult(check_name="source_unchanged_since_export", passed=False,
                                   severity=dg.AssetCheckSeverity.WARN,
                                   description=f"could not read the source to compare: {first_line(error)}")
    what = f"clients {', '.join(map(str, changed))}" if snapshot else ", ".join(changed)
    return dg.AssetCheckResult(
        check_name="source_unchanged_since_export", passed=not changed, severity=dg.AssetCheckSeverity.WARN,
        description=(f"the output is older than the source: {what} changed since the export read them; "
                     f"run the export job to refresh it") if changed else "the source is as the export read it",
        metadata=metadata,
    )
