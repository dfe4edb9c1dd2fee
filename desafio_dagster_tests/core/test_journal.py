"""The change journal (core/source/journal.py) on a real Postgres: what it records, whatever the order in which
writers commit; what a populate leaves in it; when it cannot tell and the export computes every client's
figures."""

import psycopg
import pytest

from desafio_dagster.core.source import journal, loading
from desafio_dagster.core.source.fakedata import generate
from desafio_dagster_tests.helpers import SMALL, as_published, source_snapshot


def _published(exported):
    return as_published(exported.snapshot)


def _rename(conn, client: int) -> None:
    conn.execute("UPDATE associado SET sobrenome = sobrenome || 'x' WHERE id = %s", (client,))


def test_a_change_committed_after_the_snapshot_by_a_transaction_begun_before_it_is_found_next_time(populated_db):
    """The journal orders by visibility, not by when a writer started: a transaction that wrote before an
    export's snapshot but committed after it is a change the next export finds."""
    with populated_db.connect() as late:
        _rename(late, 3)  # written, not committed
        first = source_snapshot(populated_db)
        late.commit()
    assert first.snapshot.source, "a populated source keeps a journal"
    second = source_snapshot(populated_db, _published(first))
    assert second.snapshot.changed == 1
    assert second.snapshot.clients.equals(source_snapshot(populated_db).snapshot.clients)
    with populated_db.connect() as conn:
        assert journal.changes_since(conn, second.snapshot.source).clients.tolist() == []


def test_a_rolled_back_change_is_no_change(populated_db):
    first = source_snapshot(populated_db)
    with populated_db.connect() as conn:
        _rename(conn, 4)
        conn.rollback()
        assert len(journal.changes_since(conn, first.snapshot.source)) == 0


def test_a_populate_is_every_client_and_leaves_no_row_per_loaded_row(populated_db):
    first = source_snapshot(populated_db)
    loading.replace(populated_db, generate(SMALL))
    with populated_db.connect() as conn:
        changes = journal.changes_since(conn, first.snapshot.source)
        assert changes.everything
        assert conn.execute("SELECT count(*) FROM change_journal WHERE client_id IS NOT NULL").fetchone()[0] == 0
    after = source_snapshot(populated_db, _published(first))
    assert after.snapshot.changed is None, "every client's figures were computed"


def test_published_changes_are_forgotten_and_an_older_snapshot_then_gets_every_figure(populated_db):
    first = source_snapshot(populated_db)
    with populated_db.connect() as conn:
        _rename(conn, 5)
        conn.commit()
    second = source_snapshot(populated_db, _published(first))
    assert second.snapshot.changed == 1
    with populated_db.connect() as conn:
        rows = conn.execute("SELECT count(*) FROM change_journal").fetchone()[0]  # the populate's, and the rename
    assert second.forget_seen_changes() == rows > 1  # the version of second's snapshot is published
    with populated_db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM change_journal").fetchone()[0] == 0
        assert journal.changes_since(conn, first.snapshot.source) is None, "the rows first did not see are gone"
        assert len(journal.changes_since(conn, second.snapshot.source)) == 0
        assert journal.forget(conn, first.snapshot.source) == 0, "the horizon does not move back"
    again = source_snapshot(populated_db, _published(first))
    assert again.snapshot.changed is None and again.snapshot.clients.equals(second.snapshot.clients)


def test_a_movement_written_while_its_card_moves_to_another_client_counts_for_the_new_client(populated_db):
    """The writer's view of which client owns a card may be older than the export's: the journal names the card,
    and the export looks its client up in its own snapshot."""
    first = source_snapshot(populated_db)
    with populated_db.connect() as conn:
        card, owner = conn.execute("SELECT k.id, k.id_associado FROM cartao k JOIN conta c ON c.id = k.id_conta "
                                   "WHERE c.id_associado = 3 ORDER BY k.id LIMIT 1").fetchone()
    with populated_db.connect() as late:
        late.execute("INSERT INTO movimento SELECT max(id) + 1, 1.00, 'x', '2025-12-31 10:00', %s FROM movimento", (card,))
        with populated_db.connect() as mover:  # the card moves to client 4's first account, committed first
            mover.execute("UPDATE cartao SET id_associado = 4, id_conta = (SELECT min(id) FROM conta WHERE id_associado = 4) "
                          "WHERE id = %s", (card,))
        second = source_snapshot(populated_db, _published(first))
        late.commit()
    assert owner == 3 and second.snapshot.changed == 2  # clients 3 and 4, the movement not seen yet
    third = source_snapshot(populated_db, _published(second))
    assert third.snapshot.changed == 1, "client 4, through the card the movement names"
    assert third.snapshot.clients.equals(source_snapshot(populated_db).snapshot.clients)


def test_a_writer_in_replica_mode_is_journaled_and_a_trigger_that_would_not_fire_there_counts_as_missing(populated_db):
    first = source_snapshot(populated_db)
    with populated_db.connect() as conn:
        conn.execute("SET session_replication_role = replica")  # as a restore or a logical replica's apply
        _rename(conn, 7)
        conn.commit()
        assert journal.changes_since(conn, first.snapshot.source).clients.tolist() == [7]
        conn.execute("ALTER TABLE associado ENABLE TRIGGER associado_journal_update")  # origin sessions only
        conn.commit()
        assert not journal.ready(conn)


@pytest.mark.parametrize("how", ["a trigger disabled", "no journal"])
def test_without_a_whole_journal_every_figure_is_computed_and_the_tables_fingerprinted(populated_db, how):
    first = source_snapshot(populated_db)
    with populated_db.connect() as conn:
        if how == "no journal":
            conn.execute("DROP TABLE change_journal, change_journal_horizon; DROP FUNCTION change_journal_keys CASCADE")
        else:
            conn.execute("ALTER TABLE movimento DISABLE TRIGGER movimento_journal_update")
        conn.commit()
        assert not journal.ready(conn)
    after = source_snapshot(populated_db, _published(first))
    assert after.snapshot.source is None and after.snapshot.changed is None
    assert set(after.snapshot.fingerprint) == {"associado", "conta", "cartao", "movimento"}
    populated_db.apply_schema()  # a populate or a growth puts the journal back
    with populated_db.connect() as conn:
        assert journal.ready(conn)


def test_a_writer_with_another_search_path_is_journaled(populated_db):
    first = source_snapshot(populated_db)
    with psycopg.connect(populated_db.url) as conn:  # search_path: public
        conn.execute(f"UPDATE {populated_db.schema}.associado SET idade = idade + 1 WHERE id = 6")
    with populated_db.connect() as conn:
        assert journal.changes_since(conn, first.snapshot.source).clients.tolist() == [6]
