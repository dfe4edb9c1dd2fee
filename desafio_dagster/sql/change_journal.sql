-- The change journal: which clients each transaction touched in the four tables of schema.sql, kept by
-- statement triggers, so that an incremental export computes the figures of the changed clients only
-- (core/journal.py). Not part of the data contract. Names are unqualified (the caller sets search_path).
-- Idempotent.
--
-- A row per (statement, client touched), written in the writer's own transaction: it commits or rolls back
-- with the change. xid is that transaction's id, so an export finds the changes its published version did not
-- see with pg_visible_in_snapshot(xid, <that version's snapshot>), whatever the order of commits. A NULL
-- client_id means every client (a TRUNCATE, as in a populate).
CREATE TABLE IF NOT EXISTS change_journal (
    xid       xid8   NOT NULL DEFAULT pg_current_xact_id(),
    client_id bigint
);

-- Rows visible in this snapshot were removed from the journal: an export whose published version's snapshot
-- does not see all of them cannot use the journal (one row at most).
CREATE TABLE IF NOT EXISTS change_journal_horizon (
    one      boolean     PRIMARY KEY DEFAULT true CHECK (one),
    snapshot pg_snapshot NOT NULL
);

-- The clients of a set of rows of each table: a row counts for every client the export could file it under
-- (a card under its own client and under its account's client; a movement under its card's).
CREATE OR REPLACE FUNCTION change_journal_clients() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO change_journal (client_id) VALUES (NULL);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        EXECUTE format(TG_ARGV[0], 'journal_new');
    END IF;
    IF TG_OP <> 'INSERT' THEN
        EXECUTE format(TG_ARGV[0], 'journal_old');
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE
    clients CONSTANT jsonb := jsonb_build_object(
        'associado', 'SELECT DISTINCT id FROM %1$s',
        'conta', 'SELECT DISTINCT id_associado FROM %1$s',
        'cartao', 'SELECT id_associado FROM %1$s UNION SELECT c.id_associado FROM %1$s k JOIN conta c ON c.id = k.id_conta',
        'movimento', 'SELECT k.id_associado FROM %1$s m JOIN cartao k ON k.id = m.id_cartao UNION '
                     'SELECT c.id_associado FROM %1$s m JOIN cartao k ON k.id = m.id_cartao JOIN conta c ON c.id = k.id_conta');
    tab text;
    statement text;
BEGIN
    FOR tab IN SELECT jsonb_object_keys(clients) LOOP
        statement := 'INSERT INTO change_journal (client_id) ' || (clients ->> tab);
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS journal_new '
                       'FOR EACH STATEMENT EXECUTE FUNCTION change_journal_clients(%L)', tab || '_journal_insert', tab, statement);
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER UPDATE ON %I REFERENCING OLD TABLE AS journal_old '
                       'NEW TABLE AS journal_new FOR EACH STATEMENT EXECUTE FUNCTION change_journal_clients(%L)',
                       tab || '_journal_update', tab, statement);
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS journal_old '
                       'FOR EACH STATEMENT EXECUTE FUNCTION change_journal_clients(%L)', tab || '_journal_delete', tab, statement);
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION change_journal_clients()', tab || '_journal_truncate', tab);
    END LOOP;
END $$;
