-- migrate: every-run
-- The seed's ticket_id references tickets(id). The host app owns `tickets`, which may not exist yet (or
-- ever, for a standalone install), so the foreign key is added whenever the table is there and the key
-- is not. Re-run on every migrate, so it lands once the host app creates its table.
-- Rows written before `tickets` existed may name tickets it does not have: the key is then added NOT VALID
-- (enforced for new rows only) rather than failing every migrate from then on.
DO $$
BEGIN
    IF to_regclass('tickets') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'opencode_sessions_ticket_id_fkey'
                       AND conrelid = 'opencode_sessions'::regclass) THEN
        ALTER TABLE opencode_sessions
            ADD CONSTRAINT opencode_sessions_ticket_id_fkey FOREIGN KEY (ticket_id) REFERENCES tickets (id) NOT VALID;
        BEGIN
            ALTER TABLE opencode_sessions VALIDATE CONSTRAINT opencode_sessions_ticket_id_fkey;
        EXCEPTION WHEN foreign_key_violation THEN
            RAISE WARNING 'opencode_sessions has ticket ids missing from tickets: the foreign key checks new rows only';
        END;
    END IF;
END
$$;
