-- The archive of finished OpenCode sessions. Columns and types are exactly those of the host app's
-- Drizzle schema (opencodeSessionsTable), which reads this table.
CREATE TABLE IF NOT EXISTS opencode_sessions (
    id            varchar(255) PRIMARY KEY,
    ticket_id     varchar(255),
    session_type  varchar(50)  NOT NULL,
    status        varchar(50)  NOT NULL,
    messages      jsonb        DEFAULT '[]'::jsonb,
    metadata      jsonb,
    started_at    timestamp    DEFAULT now() NOT NULL,
    completed_at  timestamp,
    error_message text
);

-- "Sessions of a ticket, newest first" (history pages, cursor on started_at, id).
CREATE INDEX IF NOT EXISTS opencode_sessions_ticket_started_idx
    ON opencode_sessions (ticket_id, started_at DESC, id DESC);

-- "By status": the PostgreSQL backstop scans pending/running rows.
CREATE INDEX IF NOT EXISTS opencode_sessions_status_idx
    ON opencode_sessions (status);

-- The admin chats page lists archived sessions of one type, newest first.
CREATE INDEX IF NOT EXISTS opencode_sessions_type_started_idx
    ON opencode_sessions (session_type, started_at DESC, id DESC);
