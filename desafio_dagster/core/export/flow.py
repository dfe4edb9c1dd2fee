"""One export of the flat view, from the source snapshot to the published version, in one place. Pure: no Dagster.

export_movements holds the export's transaction (extract.ExportedSnapshot) in one `with`: it takes the source
snapshot and its figures, plans what to write, carry and remove (incremental.py), reaches Spark only if a client
is to be written, has the tasks read, join and write their ranges of clients (transform.py), audits and publishes
the version (publish.py), and ends the transaction whatever happens, so a waiting populate goes on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from desafio_dagster.core import faults
from desafio_dagster.core.errors import first_line
from desafio_dagster.core.export.extract import ExportedSnapshot, Snapshot, partitions_for
from desafio_dagster.core.export.incremental import Plan, plan_export, published_figures
from desafio_dagster.core.export.publish import Published, publish_per_client, published_as_is
from desafio_dagster.core.export.transform import snapshot_view
from desafio_dagster.core.output.store import Store
from desafio_dagster.core.output.version import file_format
from desafio_dagster.core.progress import Stopwatch, tasks_done
from desafio_dagster.core.source.source_db import SourceDatabase
from desafio_dagster.core.spark.spark_session import Connected, task_slots


@dataclass(frozen=True)
class ExportRequest:
    """What to export: from which database, with which Spark, and how (movements_csv's config)."""

    db: SourceDatabase
    connect: Callable[[], Connected]  # the run's Spark session: called only if a client is to be written
    masked: bool = True  # card numbers as ************1234
    full_refresh: bool = False  # rewrite every client, carry nothing
    clients: tuple[int, ...] = ()  # rewrite these whatever changed
    code_version: str = "1"  # recorded in each version's _format.json: a new one rewrites every file
    max_connections: int = 0  # most Spark tasks connected to Postgres at once; 0: one per task slot


@dataclass(frozen=True)
class Export:
    """What one export did."""

    published: Published  # the version now published (a new one, or the same when nothing changed)
    plan: Plan
    snapshot: Snapshot  # the source snapshot the version was read from, and its figures
    engine: str  # the Spark engine the tasks ran on; "" when none was needed
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went, by phase
    journal_kept: str = ""  # why the change journal's seen rows could not be removed; "" if they were


def export_movements(request: ExportRequest, store: Store, log: Callable[[str], None] = print,
                     warn: Callable[[str], None] = print) -> Export:
    """Export the source database to store as a new audited version of per-client files (or keep the published
    one, when no client changed). log and warn take the export's progress and its warnings, one line each."""
    watch = Stopwatch()
    with watch("published_figures"):  # what the published version recorded of its source
        published = None if request.full_refresh else published_figures(store)
    engine = ""
    with ExportedSnapshot.open(request.db, on_wait=warn, published=published) as exported:
        faults.reached("snapshot")
        snapshot = exported.snapshot
        watch.add("snapshot_figures", snapshot.figures_seconds)
        with watch("plan"):
            plan = plan_export(store, snapshot.clients, file_format(request.code_version, request.masked),
                               request.full_refresh, list(request.clients), published)
        figured = (f"figures of the {snapshot.changed:,} clients the change journal names" if snapshot.changed
                   is not None else "figures of every client")
        log(f"snapshot {snapshot.id}: {snapshot.counts['associado']:,} clients, {snapshot.counts['movimento']:,} "
            f"movements, {figured}; {plan.mode} export ({plan.reason}): {len(plan.rewrite):,} clients to write, "
            f"{plan.carried:,} to carry, {len(plan.removed):,} to remove")
        if plan.mode == "unchanged":  # nothing to write: no new version, no Spark
            version = published_as_is(store, plan)
        else:
            view = None
            if len(plan.rewrite):
                only = None if plan.mode == "full" else plan.rewrite
                movements = snapshot.movements(only)
                with watch("spark_start"):
                    connected = request.connect()
                    slots = task_slots(connected.session)
                parts = partitions_for(movements, len(plan.rewrite), slots, request.max_connections)
                exported.check_connections(parts, slots)
                engine = connected.engine
                log(f"{engine}: up to {parts} tasks read {movements:,} movements, a range of clients each")
                sealed = connected.seal({**request.db.task_environment(), **store.task_environment()})
                view = snapshot_view(connected.session, exported, parts, request.masked, only, sealed)
            version = publish_per_client(view, store, snapshot.clients, masked=request.masked,
                                         by_client=True, on_progress=lambda *done: log(tasks_done(*done)), plan=plan,
                                         source=snapshot.source)
    journal_kept = ""
    if plan.mode != "unchanged":
        try:  # the journal's rows this version saw are no longer needed; kept, they only cost a little
            exported.forget_seen_changes()
        except Exception as error:
            journal_kept = first_line(error)
    return Export(version, plan, snapshot, engine, {**watch.seconds, **version.seconds}, journal_kept)
