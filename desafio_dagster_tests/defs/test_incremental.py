"""Incremental export end to end: only new or changed clients go through Spark, the other files are
carried by hard link, and the result is byte-identical to a full export of the same snapshot."""

import shutil

import dagster as dg

from desafio_dagster.core.output.layout import table_bytes
from desafio_dagster.core.output.version import (
    EARLIER_NAMES,
    INDEX_FILE,
    MANIFEST_FILE,
    READBACK_FILE,
    parse_index,
    parse_manifest,
    parse_readback,
)
from desafio_dagster.core.source import loading
from desafio_dagster.core.source.fakedata import generate
from desafio_dagster_tests.helpers import (
    FULL_REFRESH,
    SPEC,
    assert_untouched,
    expected_files,
    export,
    failed_run_message,
    output,
    published_files,
    run,
    snapshot,
)


def _written(folder) -> set[str]:
    """The client files the published version's own export wrote (the others were carried)."""
    version = folder.resolve()
    records = parse_readback((version / READBACK_FILE).read_bytes()).to_pylist()
    return {r["file"] for r in records if r["written_in"] == version.name}


def _files_of(folder, *clients: int) -> set[str]:
    return {f["file"] for f in parse_index((folder / INDEX_FILE).read_bytes()).to_pylist() if f["client_id"] in clients}


def test_only_changed_clients_are_rewritten_and_the_result_equals_a_full_export(published, source, env_home):
    folder, _, first = published
    before = {p.name: p.stat().st_ino for p in first.iterdir() if not p.name.startswith("_")}
    with source.connect() as conn:
        conn.execute("INSERT INTO movimento SELECT max(id) + 1, -9.99, 'nova', '2025-12-31 09:00', "
                     "(SELECT min(k.id) FROM cartao k JOIN conta c ON c.id = k.id_conta WHERE c.id_associado = 3) "
                     "FROM movimento")
        conn.execute("UPDATE associado SET nome = 'Renomeada' WHERE id = 12")
        conn.execute("INSERT INTO associado VALUES (61, 'Nova', 'Cliente', 30, 'nova@example.com')")
        for table, column in (("movimento", "id_cartao IN (SELECT id FROM cartao WHERE id_associado = 13)"),
                              ("cartao", "id_associado = 13"), ("conta", "id_associado = 13"), ("associado", "id = 13")):
            conn.execute(f"DELETE FROM {table} WHERE {column}")

    result, metadata = export()
    assert (metadata["export_mode"], metadata["clients_rewritten"], metadata["clients_carried"],
            metadata["clients_removed"]) == ("incremental", 3, SPEC.clients - 3, 1)
    assert metadata["clients_figured"] == 4, "the change journal's clients: 3, 12, 61 and 13 (gone)"
    assert _written(folder) == _files_of(folder, 3, 12, 61)
    version = folder.resolve()
    carried = {p.name for p in version.iterdir() if not p.name.startswith("_")} - _written(folder)
    assert carried and all(before[name] == (version / name).stat().st_ino for name in carried), "hard links, not copies"
    assert not any(name.startswith("00000013_") for name in published_files(folder))
    assert published_files(folder) == expected_files(source, True)
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    assert {c.metadata["files_read"].value for c in checks if "files_read" in c.metadata} == {3}

    incremental = snapshot(folder)
    _, full = export(FULL_REFRESH)
    assert (full["export_mode"], full["clients_rewritten"], full["clients_figured"]) == ("full", SPEC.clients, SPEC.clients)
    assert folder.resolve() != version
    assert snapshot(folder) == incremental, "byte-identical to a full export of the same snapshot"


def test_nothing_changed_publishes_nothing_and_starts_no_spark(published, env_home, monkeypatch):
    monkeypatch.setenv("DESAFIO_SPARK_MASTER", "spark://127.0.0.1:1")  # Spark could not start
    result, metadata = export()
    assert (metadata["export_mode"], metadata["clients_rewritten"], metadata["clients_carried"]) == (
        "unchanged", 0, SPEC.clients)
    assert metadata["version"] == str(published[2]) and metadata["clients_figured"] == 0
    assert_untouched(published)
    assert all(c.passed for c in result.get_asset_check_evaluations())


def test_named_clients_are_rewritten_and_unknown_ones_fail_clearly(published, env_home):
    message = failed_run_message(run("export", {"ops": {"movements_csv": {"config": {"clients": [5, 99999]}}}}))
    assert "clients 99999 are not in the source snapshot" in message
    assert_untouched(published)
    folder = published[0]
    _, metadata = export({"ops": {"movements_csv": {"config": {"clients": [5, 7]}}}})
    assert (metadata["export_mode"], metadata["clients_rewritten"]) == ("incremental", 2)
    assert _written(folder) == _files_of(folder, 5, 7)
    assert snapshot(folder) == published[1]


def test_what_changes_a_file_for_the_same_rows_rewrites_every_file(published, env_home, monkeypatch):
    _, metadata = export({"ops": {"movements_csv": {"config": {"mask_card_numbers": False}}}})
    assert (metadata["export_mode"], metadata["clients_rewritten"]) == ("full", SPEC.clients)
    assert "masked" in metadata["export_reason"]
    from desafio_dagster.defs.assets import movements

    monkeypatch.setattr(movements, "CODE_VERSION", "a later one")
    _, metadata = export({"ops": {"movements_csv": {"config": {"mask_card_numbers": False}}}})
    assert (metadata["export_mode"], metadata["clients_rewritten"]) == ("full", SPEC.clients)
    assert metadata["export_reason"] == "code_version changed since the published version"


def test_a_published_file_edited_by_hand_is_found_by_the_checks_of_its_day_and_rewritten_when_asked(
        published, source, env_home, monkeypatch):
    """An export carries an unchanged client's file as its records say (no stat per file). The checks stat one
    sixteenth of the files a day (client id modulo 16): on another day's slice the edit goes unseen; on its own
    day they find it, name it and the fix, and an export asked for that client mends it."""
    from desafio_dagster.core.export.incremental import SLICES, todays_slice
    from desafio_dagster.defs.assets import movements_checks

    assert {todays_slice(day * 86400.0) for day in range(SLICES)} == set(range(SLICES)), "every slice in turn"
    folder = published[0]
    victim = sorted(_files_of(folder, 9))[0]
    with open(folder / victim, "a", encoding="utf-8") as handle:
        handle.write("not,a,row\n")
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setattr(movements_checks, "todays_slice", lambda: 10)
    result = run("export", instance=instance)
    assert result.asset_materializations_for_node("movements_csv")[0].metadata["export_mode"].value == "unchanged"
    assert all(c.passed for c in result.get_asset_check_evaluations()), "client 9 is not in slice 10"
    monkeypatch.setattr(movements_checks, "todays_slice", lambda: 9)
    result = run("checks", instance=instance)
    failed = {c.check_name: c for c in result.get_asset_check_evaluations() if not c.passed}
    assert set(failed) == {"client_totals_match_snapshot", "total_rows_match_snapshot"}
    totals = failed["client_totals_match_snapshot"]
    assert victim in totals.description and "run the export with clients: [9]" in totals.description
    assert totals.metadata["files_read"].value == 1 and totals.metadata["slice_stat_today"].value == "9 of 16"
    result, metadata = export({"ops": {"movements_csv": {"config": {"clients": [9]}}}}, instance=instance)
    assert (metadata["export_mode"], metadata["clients_rewritten"]) == ("incremental", 1)
    assert _written(folder) == {victim}
    assert published_files(folder) == expected_files(source, True)
    assert all(c.passed for c in result.get_asset_check_evaluations())


def test_a_version_published_by_an_earlier_release_with_csv_records_is_carried_from(published, source, env_home):
    """Before its records were Arrow files, a version held _snapshot.csv and _readback.csv: an upgrade reads them,
    rewrites only the changed clients, and recycles such a version (here the full export's twin)."""
    folder, _, first = published
    twin = first.with_name(f"{first.name}-twin")
    twin_inode = twin.stat().st_ino
    for record, parse in ((MANIFEST_FILE, parse_manifest), (READBACK_FILE, parse_readback)):
        (first / EARLIER_NAMES[record]).write_bytes(table_bytes(parse((first / record).read_bytes())))
        (first / record).unlink()
    (twin / READBACK_FILE).unlink()  # the same inode as the version's: linked again under the earlier name
    (twin / EARLIER_NAMES[READBACK_FILE]).hardlink_to(first / EARLIER_NAMES[READBACK_FILE])
    with source.connect() as conn:
        conn.execute("UPDATE associado SET nome = 'Renomeada' WHERE id = 12")

    result, metadata = export()
    assert (metadata["export_mode"], metadata["clients_rewritten"], metadata["clients_carried"]) == (
        "incremental", 1, SPEC.clients - 1)
    assert _written(folder) == _files_of(folder, 12)
    assert folder.resolve().stat().st_ino == twin_inode, "the twin of an earlier release, recycled"
    assert published_files(folder) == expected_files(source, True)
    assert all(c.passed for c in result.get_asset_check_evaluations())
    assert {EARLIER_NAMES[MANIFEST_FILE], EARLIER_NAMES[READBACK_FILE]}.isdisjoint(p.name for p in folder.resolve().iterdir())


def test_after_a_populate_every_file_is_rewritten(published, source, env_home):
    loading.replace(source, generate(SPEC))  # the same rows, each a new row version
    _, metadata = export()
    assert (metadata["export_mode"], metadata["clients_rewritten"], metadata["clients_carried"]) == (
        "full", SPEC.clients, 0)
    assert "every client changed" in metadata["export_reason"]
    assert published_files(output(env_home)) == expected_files(source, True)


def test_the_checks_name_the_clients_changed_since_the_export_from_the_change_journal(source, env_home):
    instance = dg.DagsterInstance.ephemeral()
    export(instance=instance)
    checks = run("checks", instance=instance)
    [fresh] = [c for c in checks.get_asset_check_evaluations() if c.check_name == "source_unchanged_since_export"]
    assert fresh.passed and fresh.metadata["clients_changed"].value == 0
    with source.connect() as conn:
        conn.execute("UPDATE associado SET idade = idade + 1 WHERE id IN (4, 9)")
    checks = run("checks", instance=instance)
    [stale] = [c for c in checks.get_asset_check_evaluations() if c.check_name == "source_unchanged_since_export"]
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.WARN
    assert "clients 4, 9 changed since the export" in stale.description and stale.metadata["clients_changed"].value == 2


def test_each_export_recycles_the_version_before_the_published_one_and_keeps_both_whole(published, source, env_home):
    """A full export leaves a twin of its version (the same inodes), which the next export recycles; from then on
    each version is made in the folder of the version before the published one (only the files changed over the
    last two exports are removed or linked); the version before stays as it was published, and the output
    equals a full export's."""
    folder, _, first = published
    first_inode = first.stat().st_ino
    twin = first.with_name(f"{first.name}-twin")
    twin_inode = twin.stat().st_ino
    assert {p.name: p.stat().st_ino for p in twin.iterdir()} == {
        p.name: p.stat().st_ino for p in first.iterdir() if p.name in (*published_files(folder), READBACK_FILE)}

    def change(client: int) -> None:
        with source.connect() as conn:
            conn.execute("UPDATE associado SET sobrenome = sobrenome || ' Filho' WHERE id = %s", (client,))
            conn.execute("DELETE FROM movimento WHERE id = (SELECT min(m.id) FROM movimento m JOIN cartao k "
                         "ON k.id = m.id_cartao WHERE k.id_associado = %s)", (client + 1,))

    change(10)
    export()
    second, second_files = folder.resolve(), snapshot(folder)
    assert second.stat().st_ino == twin_inode and not twin.exists(), "the full export's twin, recycled"
    assert published_files(folder) == expected_files(source, True)
    change(20)
    export()
    third, third_files = folder.resolve(), snapshot(folder)
    assert third.stat().st_ino == first_inode, "the first version's folder, recycled"
    assert snapshot(second) == second_files, "the previous version is untouched"
    change(30)
    _, metadata = export()
    fourth = folder.resolve()
    assert fourth.stat().st_ino == twin_inode, "the second version's folder, recycled"
    assert _written(folder) == _files_of(folder, 30, 31)
    assert metadata["clients_carried"] == SPEC.clients - 2
    assert snapshot(third) == third_files, "the previous version is untouched"
    assert published_files(folder) == expected_files(source, True)
    assert {p.name for p in folder.parent.glob(".movements_csv.v-*")} == {third.name, fourth.name}
    incremental = snapshot(folder)
    export(FULL_REFRESH)
    assert snapshot(folder) == incremental, "byte-identical to a full export of the same snapshot"


def test_a_published_file_removed_by_hand_fails_the_next_export_clearly_until_it_is_asked_for(published, source, env_home):
    """Where the next export links the carried files from the published version (no folder to recycle: an output
    published before twins were made, or whose twin was removed), a file missing there fails it clearly."""
    folder = published[0]
    shutil.rmtree(published[2].with_name(f"{published[2].name}-twin"))
    victim = sorted(_files_of(folder, 9))[0]
    (folder / victim).unlink()
    with source.connect() as conn:
        conn.execute("UPDATE associado SET idade = idade + 1 WHERE id = 3")
    message = failed_run_message(run("export"))
    assert f"{victim} is missing from the published version" in message and "clients: [9]" in message
    assert folder.resolve() == published[2], "nothing published"
    _, metadata = export({"ops": {"movements_csv": {"config": {"clients": [9]}}}})
    assert (metadata["export_mode"], metadata["clients_rewritten"]) == ("incremental", 2)
    assert published_files(folder) == expected_files(source, True)
