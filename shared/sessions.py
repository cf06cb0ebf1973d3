"""The read side: a session's live state from Redis, else its archived row from PostgreSQL."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from shared import keys
from shared.archive_rows import COLUMNS, row_to_session
from shared.connections import store_errors
from shared.errors import NotFound
from shared.ids import SessionId, parse_session_id
from shared.models import assemble_state


async def read_live(redis: Redis, session_id: SessionId) -> dict[str, Any] | None:
    """One MULTI, so the three hashes are read at the same seq."""
    with store_errors("Redis"):
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.session(session_id))
            pipe.hgetall(keys.session_messages(session_id))
            pipe.hgetall(keys.session_parts(session_id))
            fields, messages, parts = await pipe.execute()
    return assemble_state(fields, messages, parts)


async def read_archived(db: Any, session_id: SessionId) -> dict[str, Any] | None:
    with store_errors("PostgreSQL"):
        cur = await db.execute(f"SELECT {COLUMNS} FROM opencode_sessions WHERE id = %s", (session_id,))
        row = await cur.fetchone()
    return row_to_session(tuple(row)) if row else None


async def get_session(redis: Redis, db: Any, session_id: str) -> dict[str, Any]:
    """Live state if the session is live, else the archive; NotFound when neither has it."""
    sid = parse_session_id(session_id)
    live = await read_live(redis, sid)
    if live is not None:
        return live
    archived = await read_archived(db, sid)
    if archived is None:
        raise NotFound(f"session {sid} not found")
    return archived
