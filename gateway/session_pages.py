"""Pages of archived sessions with their messages (`messages=true`), streamed rather than built in one piece.

A page of 100 long sessions is many megabytes: built and encoded at once on the event loop it would stall every
other client. Instead the page is read without messages, then each session is read on its own (one pool
connection at a time, never held while the client reads), encoded in a worker thread and sent as it is ready.
Past GATEWAY_MAX_RESPONSE_BYTES the page ends early (after at least one session) and `nextCursor` continues it;
so it does when PostgreSQL stops answering mid-page (the status is sent: a truncated body would be all that is
left). The first session is read before the status, so PostgreSQL down from the start is a 503.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import structlog
from psycopg_pool import PoolTimeout
from starlette.responses import Response, StreamingResponse

from gateway.state import GatewayState
from shared.errors import Unavailable
from shared.ids import SessionId
from shared.json_response import JSONResponse
from shared.models import dumps
from shared.sessions import cursor_of
from shared.store import archive

log = structlog.get_logger(__name__)


async def page_response(state: GatewayState, page: dict[str, Any], include_messages: bool) -> Response:
    """`page` as read without messages; with `include_messages`, streamed with each session's messages. The first
    session is read before the response starts: PostgreSQL unreachable is then a 503 like for any other read."""
    if not include_messages:
        return JSONResponse(page)
    pending = deque(SessionId(item["sessionId"]) for item in page["sessions"])
    first = await _next_session(state, pending)
    return StreamingResponse(_with_messages(state, first, pending, page["nextCursor"]), media_type="application/json")


Read = tuple[dict[str, Any], str]  # a session with its messages, and the cursor after it


async def _next_session(state: GatewayState, pending: deque[SessionId]) -> Read | None:
    """The page's next session still archived, with its messages and its cursor; None when none is left."""
    while pending:
        read = await _read(state, pending.popleft())
        if read is not None:
            return read
    return None  # the rest is gone, or live again, since the page was read


async def _with_messages(
    state: GatewayState, read: Read | None, pending: deque[SessionId], next_cursor: str | None
) -> AsyncIterator[bytes]:
    """Past the size cap, or when PostgreSQL stops answering once the status is sent, the page ends after the last
    session sent and `nextCursor` continues from it."""
    yield b'{"sessions":['
    sent = 0
    sent_until: str | None = None  # the cursor after the last session sent
    while read is not None:
        session, cursor = read
        chunk = (await anyio.to_thread.run_sync(dumps, session)).encode()
        if sent_until is not None and sent + len(chunk) > state.max_response_bytes:
            next_cursor = sent_until
            break
        yield chunk if sent_until is None else b"," + chunk
        sent += len(chunk)
        sent_until = cursor
        try:
            read = await _next_session(state, pending)
        except (Unavailable, PoolTimeout) as exc:
            log.warning("page_ended_early", error=getattr(exc, "message", str(exc)))
            next_cursor = sent_until
            break
    yield f'],"nextCursor":{dumps(next_cursor)}}}'.encode()


async def _read(state: GatewayState, session_id: SessionId) -> Read | None:
    """None when the row is gone or no longer archived: was sent as it was, a revived session as `pending` in a
    list of archived ones."""
    async with state.pool.connection() as conn:
        row = await archive.fetch(conn, session_id)
    if row is None or row.status not in archive.ENDED or row.started_at is None:
        return None
    session = row.to_session()
    session["messageCount"] = len(row.messages or [])
    return session, cursor_of(row.started_at, row.id)
