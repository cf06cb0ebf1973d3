-- Where each session ran: the OpenCode server's name (OPENCODE_SERVERS; NULL is the default server) and the
-- directory sent as OpenCode's `?directory=` (NULL: the server's own), so lists and sums can filter by them.
ALTER TABLE opencode_sessions
    ADD COLUMN IF NOT EXISTS server    varchar(64),
    ADD COLUMN IF NOT EXISTS directory text;
