-- migrate: every-run
-- The seed's ticket_id references tickets(id). The host app owns `tickets`, which may not exist yet (or
-- ever, for a standalone install), so the foreign key is added whenever the table is there and the key
-- is not. Re-run on every migrate, so it lands once the host app creates its table.
DO $$
BEGIN
    IF to_regclass('tickets') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'opencode_sessions_ticket_id_fkey') THEN
        ALTER TABLE opencode_sessions
            ADD CONSTRAINT opencode_sessions_ticket_id_fkey FOREIGN KEY (ticket_id) REFERENCES tickets (id);
    END IF;
END
$$;
