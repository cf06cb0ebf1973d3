-- Every permission request and question a session waited on, with its answer, who gave it and when.
-- An answer is recorded here before the poller hands it to OpenCode (delivered_at), so none is lost or
-- given twice across a replica crash. `request` is the entry as the live state's `pending` showed it.
CREATE TABLE IF NOT EXISTS opencode_session_requests (
    id            varchar(255) PRIMARY KEY,
    session_id    varchar(255) NOT NULL,
    kind          varchar(20)  NOT NULL,
    request       jsonb        NOT NULL,
    asked_at      timestamp    NOT NULL,
    answer        jsonb,
    answered_by   text,
    answered_at   timestamp,
    delivered_at  timestamp,
    outcome       varchar(20)
);

CREATE INDEX IF NOT EXISTS opencode_session_requests_session_idx
    ON opencode_session_requests (session_id, asked_at);
