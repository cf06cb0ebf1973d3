"""OpenCode's `/event` stream as the client reads it: records come out whole whatever the stream's cuts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio.lowlevel
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from shared.dev.simulator.server import serve_in_thread
from shared.errors import Unavailable
from shared.models import dumps
from shared.opencode.client import UNREADABLE, OpenCodeClient

pytestmark = pytest.mark.anyio


async def test_event_records_are_read_whole_however_the_stream_cuts_them() -> None:
    """Records cut anywhere (a separator split between two reads, a record of megabytes in small pieces) come out
    whole and in order, and a record that is not JSON comes as UNREADABLE. Was: the whole buffer was split again
    on every read, so a record of N bytes cost N²/chunk to read, holding up the replica's loop."""
    big = "y" * 2_000_000
    records = [
        {"type": "server.connected", "properties": {}},
        {"type": "message.part.delta", "properties": {"sessionID": "ses_x", "delta": big}},
        {"type": "session.idle", "properties": {"sessionID": "ses_x"}},
    ]
    stream = b"".join(b"data: " + dumps(r).encode() + b"\n\n" for r in records[:2]) + b"data: {not json\n\n"
    stream += b"data: " + dumps(records[2]).encode() + b"\n\n"
    cuts = [1, 5, 6, 7, 1 << 10, 3, 2]  # every size in turn, the separators falling anywhere

    async def events(request: Request) -> Response:
        async def pieces() -> AsyncIterator[bytes]:
            at, n = 0, 0
            while at < len(stream):
                size = cuts[n % len(cuts)]
                yield stream[at : at + size]
                at, n = at + size, n + 1
                await anyio.lowlevel.checkpoint()

        return StreamingResponse(pieces(), media_type="text/event-stream")

    with serve_in_thread(Starlette(routes=[Route("/event", events)])) as url:
        async with OpenCodeClient(url, max_body_bytes=4_000_000) as oc:
            seen: list[dict[str, Any]] = []
            with pytest.raises(Unavailable, match="closed GET /event"):
                async for event in oc.events():
                    seen.append(event)
    assert seen == [*records[:2], {"type": UNREADABLE}, records[2]]
