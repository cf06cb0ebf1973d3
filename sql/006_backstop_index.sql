-- The PostgreSQL backstop walks every pending/running row in (started_at, id) order, a page at a time after a
-- cursor (poller/reconcile.py). This index holds those rows only, in that order: each page reads its own rows
-- and no others, however many sessions are unfinished and however many are archived.
CREATE INDEX IF NOT EXISTS opencode_sessions_unfinished_idx
    ON opencode_sessions (started_at, id) WHERE status IN ('pending', 'running');
