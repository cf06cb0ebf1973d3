"""Pages of archived sessions with their messages (`messages=true`), streamed rather than built in one piece.

A page of 100 long sessions is many megabytes: built and encoded at once on the event loop it would stall every
other client. Instead the page is read without messages, then each session is read on its own (one pool
connection at a time, never held while the client reads), encoded in a worker thread and sent as it is ready.
Past GATEWAY_MAX_RESPONSE_BYTES the page ends early (after at least one session) and `nextCursor` continues it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from starlette.responses import Response, StreamingResponse

from gateway.state import GatewayState
from shared.ids import SessionId
from shared.json_response import JSONResponse
from shared.models import dumps
from shared.sessions import encode_cursor
from shared.store import archive


def page_response(state: GatewayState, page: dict[str, Any], include_messages: bool) -> Response:
    """`page` as read without messages; with `include_messages`, streamed with each session's messages."""
    if not include_messages:
        return JSONResponse(page)
    return StreamingResponse(_with_messages(state, page), media_type="application/json")


async def _with_messages(state: GatewayState, page: dict[str, Any]) -> AsyncIterator[bytes]:
    yield b'{"sessions":['
    sent = 0
    last: dict[str, Any] | None = None
    next_cursor = page["nextCursor"]
    for item in page["sessions"]:
        session = await _read(state, SessionId(item["sessionId"]))
        if session is None:
            continue  # gone since the page was read
        chunk = (await anyio.to_thread.run_sync(dumps, session)).encode()
        if last is not None and sent + len(chunk) > state.max_response_bytes:
            next_cursor = encode_cursor(int(last["startedAt"]), last["sessionId"])
            break
        yield chunk if last is None else b"," + chunk
        sent += len(chunk)
        last = item
    yield f'],"nextCursor":{dumps(next_cursor)}}}'.encode()


async def _read(state: GatewayState, session_id: SessionId) -> dict[str, Any] | None:
    async with state.pool.connection() as conn:
        row = await archive.fetch(conn, session_id)
    if row is None:
        return None
    session = row.to_session()
    session["messageCount"] = len(row.messages or [])
    return session
