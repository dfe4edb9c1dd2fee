"""The local store's recycling (no Spark): the version before the published one becomes the next version,
holding exactly the carried files, the same inodes as the published ones; a folder whose records were not
all written (a run killed while writing or recycling it) is never recycled, and the cleanup removes it."""

import pyarrow as pa
import pytest

from desafio_dagster.core.output.layout import table_bytes
from desafio_dagster.core.output.store import LocalStore
from desafio_dagster.core.output.version import EARLIER_NAMES, HELD_SCHEMA, READBACK_FILE, parse_readback, record_bytes

NAME = "movements_csv"


def _version(store: LocalStore, token: str, written: dict[str, str], carried_from: str | None = None,
             carried: tuple[str, ...] = (), complete: bool = True, earlier: bool = False) -> str:
    """A version as the export leaves it: the files it wrote (file -> content), those it carried (hard links to
    carried_from's), its records, and _readback.arrow (written last) naming the version that wrote each file;
    earlier: _readback.csv, as an earlier release wrote it."""
    name = store.version_name(token)
    folder = store.output_dir / name
    folder.mkdir()
    holders = {file: name for file in written}
    for file, content in written.items():
        (folder / file).write_text(content)
    for file in carried:
        (folder / file).hardlink_to(store.output_dir / carried_from / file)
        holders[file] = _holders(store, carried_from)[file]
    if complete:
        (folder / "_index.csv").write_text("record\n")
        files = sorted(holders)
        held = pa.table([files, [holders[f] for f in files]], schema=HELD_SCHEMA)
        if earlier:
            (folder / EARLIER_NAMES[READBACK_FILE]).write_bytes(table_bytes(held))
        else:
            (folder / READBACK_FILE).write_bytes(record_bytes(held, HELD_SCHEMA))
    return name


def _holders(store: LocalStore, version: str) -> dict[str, str]:
    held = parse_readback(store.read_record(version, READBACK_FILE), HELD_SCHEMA)
    return dict(zip(held["file"].to_pylist(), held["written_in"].to_pylist()))


@pytest.mark.parametrize("earlier", [False, True], ids=["arrow_records", "older_of_an_earlier_release"])
def test_the_version_before_the_published_one_is_recycled_into_exactly_the_carried_files(tmp_path, earlier):
    """earlier: the older version's records are an earlier release's (CSV): it is recycled all the same."""
    store = LocalStore(tmp_path, NAME)
    older = _version(store, "20260101T000000-a", {"a.csv": "a1", "b.csv": "b1", "gone.csv": "g1"}, earlier=earlier)
    published = _version(store, "20260102T000000-b", {"b.csv": "b2", "c.csv": "c2"}, older, ("a.csv", "gone.csv"))
    store.publish(published, replacing=None)
    killed = _version(store, "20260103T000000-c", {"x.csv": "half"}, complete=False)  # a run killed meanwhile
    store.remove_leftovers(keep={published}, spare=True)
    assert not (tmp_path / killed).exists(), "a folder without all its records is removed, never spared"
    assert (tmp_path / older).exists(), "the newest complete version is spared for the next one"

    # The next version carries a.csv (written by older) and c.csv (written by published); b.csv and gone.csv
    # are rewritten or removed.
    holders = _holders(store, published)
    carried = pa.table({"file": ["a.csv", "c.csv"], "written_in": [holders["a.csv"], holders["c.csv"]]})
    inode = (tmp_path / older).stat().st_ino
    new = store.version_name("20260104T000000-d")
    store.open_version(new, published, carried)
    folder = tmp_path / new
    assert folder.stat().st_ino == inode and not (tmp_path / older).exists(), "the older folder, renamed"
    assert store.files(new).client_files()["file"].to_pylist() == ["a.csv", "c.csv"], "stale files set aside at once"
    store.drop_attempts(new)  # once the tasks are done: the stale files set aside are removed too
    assert sorted(p.name for p in folder.iterdir()) == ["a.csv", "c.csv"], "its records and stale files are gone"
    for file in ("a.csv", "c.csv"):
        assert (folder / file).stat().st_ino == (tmp_path / published / file).stat().st_ino, "the published inodes"
    assert {p.name: p.read_text() for p in (tmp_path / published).iterdir() if not p.name.startswith("_")} == {
        "a.csv": "a1", "b.csv": "b2", "c.csv": "c2", "gone.csv": "g1"}, "the published version is untouched"


def test_without_a_spared_version_the_carried_files_are_linked_into_a_new_folder(tmp_path):
    store = LocalStore(tmp_path, NAME)
    published = _version(store, "20260102T000000-b", {"a.csv": "a2", "b.csv": "b2"})
    store.publish(published, replacing=None)
    store.remove_leftovers(keep={published}, spare=True)
    new = store.version_name("20260104T000000-d")
    store.open_version(new, published, pa.table({"file": ["a.csv"], "written_in": [published]}))
    assert [p.name for p in (tmp_path / new).iterdir()] == ["a.csv"]
    assert (tmp_path / new / "a.csv").stat().st_ino == (tmp_path / published / "a.csv").stat().st_ino
