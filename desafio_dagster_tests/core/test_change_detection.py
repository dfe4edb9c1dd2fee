"""Change detection per client: one insert, update or delete in any of the four tables changes the
fingerprint of exactly the clients whose file it changes, and the change journal names exactly those
clients, so the figures an export takes from the journal are those of every client computed afresh
(real Postgres, the export's own snapshot)."""

import pytest

from desafio_dagster.core.source import loading
from desafio_dagster.core.source.fakedata import generate
from desafio_dagster_tests.helpers import SMALL, as_published, source_snapshot

# (change, SQL, the clients whose fingerprint must change). Clients 3..14 have at least one movement
# (asserted below); every statement touches only the rows it names.
A_CARD_OF = "(SELECT min(k.id) FROM cartao k JOIN conta c ON c.id = k.id_conta WHERE c.id_associado = {})"
A_MOVEMENT_OF = "(SELECT min(m.id) FROM movimento m WHERE m.id_cartao IN (SELECT k.id FROM cartao k JOIN conta c ON c.id = k.id_conta WHERE c.id_associado = {}))"
CHANGES = {
    "insert movimento": (f"INSERT INTO movimento SELECT (SELECT max(id) + 1 FROM movimento), -1.00, 'x', "
                         f"'2025-12-31 10:00', {A_CARD_OF.format(3)}", {3}),
    "update movimento": (f"UPDATE movimento SET vlr_transacao = vlr_transacao + 1 WHERE id = {A_MOVEMENT_OF.format(4)}", {4}),
    "delete movimento": (f"DELETE FROM movimento WHERE id = {A_MOVEMENT_OF.format(5)}", {5}),
    "insert cartao": ("INSERT INTO cartao SELECT (SELECT max(id) + 1 FROM cartao), '4000000000000002', 'X', "
                      "'2025-01-01', c.id, c.id_associado FROM conta c WHERE c.id = (SELECT min(id) FROM conta WHERE id_associado = 6)", {6}),
    "update cartao": (f"UPDATE cartao SET nom_impresso = 'NOVO NOME' WHERE id = {A_CARD_OF.format(7)}", {7}),
    "delete cartao": (f"DELETE FROM movimento WHERE id_cartao = {A_CARD_OF.format(8)}; "
                      f"DELETE FROM cartao WHERE id = {A_CARD_OF.format(8)}", {8}),
    "insert conta": ("INSERT INTO conta SELECT (SELECT max(id) + 1 FROM conta), 'poupanca', '2025-01-01', 9", {9}),
    "update conta": ("UPDATE conta SET tipo = 'investimento' WHERE id = (SELECT min(id) FROM conta WHERE id_associado = 10)", {10}),
    "delete conta": ("DELETE FROM movimento WHERE id_cartao IN (SELECT id FROM cartao WHERE id_conta = "
                     "(SELECT min(id) FROM conta WHERE id_associado = 11)); "
                     "DELETE FROM cartao WHERE id_conta = (SELECT min(id) FROM conta WHERE id_associado = 11); "
                     "DELETE FROM conta WHERE id = (SELECT min(id) FROM conta WHERE id_associado = 11)", {11}),
    "client renamed": ("UPDATE associado SET sobrenome = 'Renomeado' WHERE id = 12", {12}),
    "client added": ("INSERT INTO associado SELECT (SELECT max(id) + 1 FROM associado), 'Nova', 'Cliente', 30, "
                     "'nova@example.com'", {SMALL.clients + 1}),
    "client deleted": ("DELETE FROM movimento WHERE id_cartao IN (SELECT id FROM cartao WHERE id_associado = 13); "
                       "DELETE FROM cartao WHERE id_associado = 13; DELETE FROM conta WHERE id_associado = 13; "
                       "DELETE FROM associado WHERE id = 13", {13}),
    "card moved to another client": (f"UPDATE cartao SET id_conta = (SELECT min(id) FROM conta WHERE id_associado = 14), "
                                     f"id_associado = 14 WHERE id = {A_CARD_OF.format(3)}", {3, 14}),
}


def _clients(db, published=None) -> dict[int, tuple]:
    """Client id -> (file, rows, total, fingerprint), from the export's snapshot."""
    return {f["client_id"]: (f["file"], f["rows"], f["vlr_transacao_total"], f["fingerprint"])
            for f in source_snapshot(db, published).snapshot.clients.to_pylist()}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_alters_the_fingerprint_of_exactly_the_affected_clients(source_db, change):
    loading.replace(source_db, generate(SMALL))  # every card has movements
    with source_db.connect() as conn:
        for client in range(3, 15):
            assert conn.execute(f"SELECT count(*) FROM movimento WHERE id = {A_MOVEMENT_OF.format(client)}").fetchone()[0] == 1
    exported = source_snapshot(source_db).snapshot
    before = _clients(source_db)
    statement, affected = CHANGES[change]
    with source_db.connect() as conn:
        for part in statement.split("; "):
            assert conn.execute(part).rowcount >= 1, part
    after = _clients(source_db)
    changed = {c for c in before.keys() | after.keys() if before.get(c) != after.get(c)}
    assert changed == affected
    assert all(before[c][3] != after[c][3] for c in changed if c in before and c in after), "the fingerprint moved"
    # The journal names those clients, and the published figures updated with theirs are every client's afresh.
    journaled = source_snapshot(source_db, as_published(exported)).snapshot
    assert journaled.changed == len(affected), "the journal names exactly the affected clients"
    assert _clients(source_db, as_published(exported)) == after


def test_the_fingerprint_is_the_same_in_every_snapshot_of_unchanged_data(populated_db):
    first = _clients(populated_db)
    with populated_db.connect() as conn:  # a vacuum moves nothing a fingerprint holds
        conn.autocommit = True
        conn.execute("VACUUM (FREEZE) movimento")
    assert _clients(populated_db) == first
    assert len({f[3] for f in first.values()}) == len(first), "clients' fingerprints differ from one another"
