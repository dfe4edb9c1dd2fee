-- The change journal: which rows each transaction touched in the four tables of schema.sql, kept by
-- statement triggers, so that an incremental export computes the figures of the changed clients only
-- (core/source/journal.py). Not part of the data contract. Names are unqualified (the caller sets search_path).
-- Idempotent.
--
-- A row per (statement, key touched), written in the writer's own transaction: it commits or rolls back
-- with the change. xid is that transaction's id, so an export finds the changes its published version did not
-- see with pg_visible_in_snapshot(xid, <that version's snapshot>), whatever the order of commits. Each row
-- names a client, or a card or an account whose clients the export looks up in its own snapshot (a writer's
-- view of which client owns a card may be older than the export's). NULLs everywhere mean every client (a
-- TRUNCATE, as in a populate).
CREATE TABLE IF NOT EXISTS change_journal (
    xid        xid8   NOT NULL DEFAULT pg_current_xact_id(),
    client_id  bigint,
    card_id    bigint,
    account_id bigint
);
ALTER TABLE change_journal ADD COLUMN IF NOT EXISTS card_id bigint, ADD COLUMN IF NOT EXISTS account_id bigint;

-- Rows visible in this snapshot were removed from the journal: an export whose published version's snapshot
-- does not see all of them cannot use the journal (one row at most).
CREATE TABLE IF NOT EXISTS change_journal_horizon (
    one      boolean     PRIMARY KEY DEFAULT true CHECK (one),
    snapshot pg_snapshot NOT NULL
);

-- The keys a statement touched, from its transition tables (TG_ARGV[0]: the select list over %1$s, the rows).
-- SECURITY DEFINER, with the schema then pg_temp as its search_path: a writer needs no right on the journal,
-- and no temporary table of the writer's can take its place.
CREATE OR REPLACE FUNCTION change_journal_keys() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO change_journal (client_id) VALUES (NULL);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        EXECUTE format('INSERT INTO change_journal (client_id, card_id, account_id) SELECT DISTINCT ' || TG_ARGV[0],
                       'journal_new');
    END IF;
    IF TG_OP <> 'INSERT' THEN
        EXECUTE format('INSERT INTO change_journal (client_id, card_id, account_id) SELECT DISTINCT ' || TG_ARGV[0],
                       'journal_old');
    END IF;
    RETURN NULL;
END $$;
DROP FUNCTION IF EXISTS change_journal_clients() CASCADE;  -- the first journal's, which looked clients up itself

DO $$
DECLARE
    keys CONSTANT jsonb := jsonb_build_object(
        'associado', 'id, NULL::bigint, NULL::bigint FROM %1$s',
        'conta', 'id_associado, NULL::bigint, id FROM %1$s',
        'cartao', 'id_associado, id, id_conta FROM %1$s',
        'movimento', 'NULL::bigint, id_cartao, NULL::bigint FROM %1$s');
    tab text;
    event text;
BEGIN
    EXECUTE format('ALTER FUNCTION change_journal_keys() SET search_path = %I, pg_temp', current_schema());
    REVOKE ALL ON FUNCTION change_journal_keys() FROM PUBLIC;
    FOR tab IN SELECT jsonb_object_keys(keys) LOOP
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS journal_new '
                       'FOR EACH STATEMENT EXECUTE FUNCTION change_journal_keys(%L)', tab || '_journal_insert', tab, keys ->> tab);
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER UPDATE ON %I REFERENCING OLD TABLE AS journal_old '
                       'NEW TABLE AS journal_new FOR EACH STATEMENT EXECUTE FUNCTION change_journal_keys(%L)',
                       tab || '_journal_update', tab, keys ->> tab);
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS journal_old '
                       'FOR EACH STATEMENT EXECUTE FUNCTION change_journal_keys(%L)', tab || '_journal_delete', tab, keys ->> tab);
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION change_journal_keys()', tab || '_journal_truncate', tab);
        -- ALWAYS: they fire in a session with session_replication_role = replica too (as a restore's or a
        -- logical replica's); a trigger that does not is taken as missing (journal.ready).
        FOREACH event IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
            EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER %I', tab, tab || '_journal_' || event);
        END LOOP;
    END LOOP;
END $$;
