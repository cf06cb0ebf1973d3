"""The `opencode_session_requests` table (sql/003): every request a session waited on, and its answer.

`answer` is `{"reply": "once"|"always"|"reject", "message"?}` for a permission, `{"answers": [[label, …], …]}`
or `{"reject": true}` for a question. `outcome`: `answered` (OpenCode took our answer), `gone` (it stopped
waiting without ours: answered elsewhere, or the run was aborted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb, set_json_loads

from shared.store.archive import PgConnection, to_epoch_ms, to_timestamp
from shared.store.connections import store_errors
from shared.store.times import read_any_time
from shared.store.unstorable import dumps_jsonb, loads_jsonb

COLUMNS = "id, session_id, kind, request, asked_at, answer, answered_by, answered_at, delivered_at, outcome"

_RECORD_ASKED = """
INSERT INTO opencode_session_requests (id, session_id, kind, request, asked_at) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING
"""

# First answer wins: a second one (another person, the timeout) finds `answer` set and changes nothing. The table
# is keyed by the request id alone: a row of another session (an OpenCode that gave two sessions one id) is never
# answered for this one.
_RECORD_ANSWER = f"""
INSERT INTO opencode_session_requests AS r (id, session_id, kind, request, asked_at, answer, answered_by, answered_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET answer = excluded.answer, answered_by = excluded.answered_by,
    answered_at = excluded.answered_at
WHERE r.answer IS NULL AND r.outcome IS NULL AND r.session_id = excluded.session_id
RETURNING {COLUMNS}
"""

_RECORD_OUTCOME = """
UPDATE opencode_session_requests SET outcome = %s, delivered_at = CASE WHEN %s = 'answered' THEN %s END
WHERE id = %s AND session_id = %s AND outcome IS NULL
"""

# OpenCode stopped waiting without an answer of ours (answered elsewhere, or the run was aborted); a request we
# hold an answer for is settled by its delivery instead
_RECORD_GONE = """
UPDATE opencode_session_requests SET outcome = 'gone'
WHERE id = ANY(%s) AND session_id = %s AND outcome IS NULL AND answer IS NULL
"""

# Answers recorded but not yet taken by OpenCode: what a session re-queued from the archive must carry again.
_UNDELIVERED = f"""
SELECT {COLUMNS} FROM opencode_session_requests
WHERE session_id = ANY(%s) AND answer IS NOT NULL AND outcome IS NULL ORDER BY answered_at, id
"""

_OF_SESSION = f"SELECT {COLUMNS} FROM opencode_session_requests WHERE session_id = %s ORDER BY asked_at, id"
_ONE = f"SELECT {COLUMNS} FROM opencode_session_requests WHERE id = %s"


@dataclass(frozen=True, slots=True)
class RequestRow:
    id: str
    session_id: str
    kind: str
    request: Any
    asked_at: datetime
    answer: Any
    answered_by: str | None
    answered_at: datetime | None
    delivered_at: datetime | None
    outcome: str | None

    def to_json(self) -> dict[str, Any]:
        """The request as `show --json` lists it for an archived session."""
        return {
            **(self.request if isinstance(self.request, dict) else {}),
            "kind": self.kind,
            "id": self.id,
            "askedAt": to_epoch_ms(self.asked_at),
            "answer": self.answer,
            "answeredBy": self.answered_by,
            "answeredAt": to_epoch_ms(self.answered_at),
            "deliveredAt": to_epoch_ms(self.delivered_at),
            "outcome": self.outcome,
        }


async def _rows(db: PgConnection, sql: str, params: tuple[Any, ...]) -> list[RequestRow]:
    with store_errors("PostgreSQL"):
        async with db.cursor(row_factory=class_row(RequestRow)) as cur:
            set_json_loads(loads_jsonb, cur)  # characters PostgreSQL refuses come back as they were
            read_any_time(cur)
            await cur.execute(sql, params)
            return await cur.fetchall()


def _jsonb(value: Mapping[str, Any]) -> Jsonb:
    """Stored as the archive stores OpenCode's content (shared.store.unstorable): nothing it refuses is lost."""
    return Jsonb(dict(value), dumps=dumps_jsonb)


async def record_asked(db: PgConnection, session_id: str, entry: Mapping[str, Any]) -> None:
    """A request the poller saw (idempotent)."""
    params = (entry["id"], session_id, entry["kind"], _jsonb(entry), to_timestamp(int(entry["askedAt"])))
    with store_errors("PostgreSQL"):
        await db.execute(_RECORD_ASKED, params)


async def record_answer(
    db: PgConnection, session_id: str, entry: Mapping[str, Any], answer: Mapping[str, Any], by: str | None, now_ms: int
) -> RequestRow | None:
    """The answer, unless the request already has one (None then)."""
    params = (
        entry["id"],
        session_id,
        entry["kind"],
        _jsonb(entry),
        to_timestamp(int(entry["askedAt"])),
        _jsonb(answer),
        by,
        to_timestamp(now_ms),
    )
    rows = await _rows(db, _RECORD_ANSWER, params)
    return rows[0] if rows else None


async def record_outcome(db: PgConnection, session_id: str, request_id: str, outcome: str, now_ms: int) -> None:
    """How the session's request ended (the table is keyed by request id alone: a row of another session that
    OpenCode listed under the same id is left as it is)."""
    with store_errors("PostgreSQL"):
        await db.execute(_RECORD_OUTCOME, (outcome, outcome, to_timestamp(now_ms), request_id, session_id))


async def record_gone(db: PgConnection, session_id: str, request_ids: Sequence[str]) -> None:
    """The session's requests OpenCode no longer waits on that nobody answered through us."""
    with store_errors("PostgreSQL"):
        await db.execute(_RECORD_GONE, (list(request_ids), session_id))


async def fetch(db: PgConnection, request_id: str) -> RequestRow | None:
    rows = await _rows(db, _ONE, (request_id,))
    return rows[0] if rows else None


async def of_session(db: PgConnection, session_id: str) -> list[RequestRow]:
    return await _rows(db, _OF_SESSION, (session_id,))


async def undelivered(db: PgConnection, session_ids: list[str]) -> list[RequestRow]:
    """Answers recorded for these sessions that OpenCode has not taken yet, oldest first."""
    return await _rows(db, _UNDELIVERED, (session_ids,))
