-- migrate: every-run
-- migrate: no-transaction
-- The seed's ticket_id references tickets(id). The host app owns `tickets`, which may not exist yet (or
-- ever, for a standalone install), so the foreign key is added whenever the table is there and the key
-- is not. Re-run on every migrate, so it lands once the host app creates its table.
-- Added NOT VALID and committed first: adding locks out every write to opencode_sessions and to tickets, but only
-- for a moment; validating then scans the whole archive under a lock that lets both be written (outside a
-- transaction, the DO block may commit in between). A run stopped before validating leaves it to the next.
-- Rows written before `tickets` existed may name tickets it does not have: the key then stays NOT VALID (enforced
-- for new rows only) rather than failing every migrate from then on, and its comment says why, so that later
-- runs do not scan the archive again.
DO $$
DECLARE
    fk oid := (SELECT oid FROM pg_constraint WHERE conname = 'opencode_sessions_ticket_id_fkey'
               AND conrelid = 'opencode_sessions'::regclass);
BEGIN
    IF to_regclass('tickets') IS NULL THEN
        RETURN;
    END IF;
    IF fk IS NULL THEN
        ALTER TABLE opencode_sessions
            ADD CONSTRAINT opencode_sessions_ticket_id_fkey FOREIGN KEY (ticket_id) REFERENCES tickets (id) NOT VALID;
        COMMIT;
    ELSIF (SELECT convalidated FROM pg_constraint WHERE oid = fk) OR obj_description(fk, 'pg_constraint') IS NOT NULL THEN
        RETURN;
    END IF;
    BEGIN
        ALTER TABLE opencode_sessions VALIDATE CONSTRAINT opencode_sessions_ticket_id_fkey;
    EXCEPTION WHEN foreign_key_violation THEN
        COMMENT ON CONSTRAINT opencode_sessions_ticket_id_fkey ON opencode_sessions IS
            'NOT VALID: rows archived before tickets existed name ticket ids it does not have';
        RAISE WARNING 'opencode_sessions has ticket ids missing from tickets: the foreign key checks new rows only';
    END;
END
$$;
