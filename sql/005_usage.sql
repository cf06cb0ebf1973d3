-- What each session used, in real columns so a backend can SUM by ticket, type, server or day: tokens by kind,
-- cost and model steps, summed over the assistant messages (one per model step). The poller writes them with
-- the archive; rows archived before this migration get theirs computed here from their stored messages.
ALTER TABLE opencode_sessions
    ADD COLUMN IF NOT EXISTS tokens_input       bigint  NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS tokens_output      bigint  NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS tokens_reasoning   bigint  NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS tokens_cache_read  bigint  NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS tokens_cache_write bigint  NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cost               numeric NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS steps              integer NOT NULL DEFAULT 0;

-- A value that is not a JSON number counts as 0, as in shared/usage.py.
CREATE OR REPLACE FUNCTION pg_temp.usage_number(value jsonb) RETURNS numeric
    LANGUAGE sql IMMUTABLE AS
$$ SELECT CASE WHEN jsonb_typeof(value) = 'number' THEN value::text::numeric ELSE 0 END $$;

UPDATE opencode_sessions AS s SET
    tokens_input       = u.tokens_input,
    tokens_output      = u.tokens_output,
    tokens_reasoning   = u.tokens_reasoning,
    tokens_cache_read  = u.tokens_cache_read,
    tokens_cache_write = u.tokens_cache_write,
    cost               = u.cost,
    steps              = u.steps
FROM (
    SELECT o.id,
           sum(trunc(pg_temp.usage_number(m #> '{info,tokens,input}')))::bigint         AS tokens_input,
           sum(trunc(pg_temp.usage_number(m #> '{info,tokens,output}')))::bigint        AS tokens_output,
           sum(trunc(pg_temp.usage_number(m #> '{info,tokens,reasoning}')))::bigint     AS tokens_reasoning,
           sum(trunc(pg_temp.usage_number(m #> '{info,tokens,cache,read}')))::bigint    AS tokens_cache_read,
           sum(trunc(pg_temp.usage_number(m #> '{info,tokens,cache,write}')))::bigint   AS tokens_cache_write,
           round(sum(pg_temp.usage_number(m #> '{info,cost}')), 10)                     AS cost,
           count(*)::integer                                                            AS steps
    FROM opencode_sessions AS o, jsonb_array_elements(o.messages) AS m
    WHERE jsonb_typeof(o.messages) = 'array' AND m #>> '{info,role}' = 'assistant'
    GROUP BY o.id
) AS u
WHERE s.id = u.id;

-- "What did this ticket / this day cost": sums over a ticket's rows use the ticket index; by day, this one.
CREATE INDEX IF NOT EXISTS opencode_sessions_started_idx ON opencode_sessions (started_at);
