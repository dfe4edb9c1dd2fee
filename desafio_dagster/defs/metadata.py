"""The materialization metadata keys that more than their writer reads: movements_csv's checks, and the summary
`make run` prints (desafio_dagster/cli). The writers and the readers name them from here."""

ROW_COUNT = "dagster/row_count"  # rows of the asset (Dagster's own key)
# raw_* (the source_database op)
ROWS_ADDED = "rows_added"  # by this run: a populate's whole table, a grow's days
# movements_csv (the per-client CSV IO manager)
PATH = "path"  # where readers look: the folder's symlink, or the S3 prefix
VERSION = "version"  # the version this run published (or kept): the checks judge exactly that one
CLIENTS = "clients"  # files published, one per client
EXPORT_MODE = "export_mode"  # full, incremental, or unchanged
EXPORT_REASON = "export_reason"
CLIENTS_REWRITTEN = "clients_rewritten"
CLIENTS_CARRIED = "clients_carried"
CLIENTS_REMOVED = "clients_removed"
WRITTEN_IN = "written_in"  # the version whose files this run wrote ("" when none): the checks read those back
MASKED_CARD_NUMBERS = "masked_card_numbers"
MANIFEST_SHA256 = "snapshot_manifest_sha256"  # of the version's _snapshot.arrow, the figures the checks judge against
SOURCE_SNAPSHOT = "source_snapshot"  # where the source keeps a change journal: the checks ask what changed since
SOURCE_FINGERPRINT = "source_fingerprint"  # else the tables' fingerprints, to compare with the live ones
SPARK_ENGINE = "spark_engine"  # the engine the export ran on, when it needed one
SOURCE_ROWS = "source_{table}_rows"  # each source table's rows in the exported snapshot (str.format with table)
