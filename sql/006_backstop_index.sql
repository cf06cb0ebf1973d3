-- migrate: no-transaction
-- migrate: replaces f5f247e02d4d09360309788fbb84b111bedbee9bc8f8e66737b7c274e7927e3e
-- The PostgreSQL backstop walks every pending/running row in (started_at, id) order, a page at a time after a
-- cursor (poller/reconcile.py). This index holds those rows only, in that order: each page reads its own rows
-- and no others, however many sessions are unfinished and however many are archived.
-- Built CONCURRENTLY, outside a transaction: the pollers keep archiving while it builds, however large the table.
-- A build cut short leaves the index INVALID; the next migrate drops it and builds it again. The `replaces` line
-- is this file's first text, which built the same index inside a transaction: databases that ran it are up to date.
CREATE INDEX CONCURRENTLY IF NOT EXISTS opencode_sessions_unfinished_idx
    ON opencode_sessions (started_at, id) WHERE status IN ('pending', 'running');
