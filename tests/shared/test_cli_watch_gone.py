"""`watch` when its stream breaks off mid-line or the gateway goes away, with stdout and stderr on one terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from shared.dev.simulator.server import serve_in_thread

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-c", "from shared.cli import main; main()"]
SESSION = "ses_0000000000000000000000000A"
MID = "msg_00000000000000000000000001"
LEAD = "  assistant text: "


def frame(name: str, data: dict[str, Any], event_id: int) -> bytes:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data)}\n\n".encode()


def snapshot(text: str) -> dict[str, Any]:
    part = {"id": "prt_1", "messageID": MID, "type": "text", "text": text}
    state = {"sessionId": SESSION, "status": "running", "sessionType": "ask", "ticketId": None, "error": None}
    state |= {"currentToolCalls": [], "seq": 2, "live": True}
    state["messages"] = [{"info": {"id": MID, "role": "assistant"}, "parts": [part]}]
    return state


def gateway(later: list[bytes] | None) -> Starlette:
    """The first stream sends a half-written text and breaks off; the next one gets `later`, or a 503 when None."""
    seen: list[str | None] = []

    async def stream(request: Request) -> Response:
        seen.append(request.headers.get("last-event-id"))
        if len(seen) > 1 and later is None:
            return JSONResponse({"error": "Redis is unreachable"}, status_code=503)
        frames = [frame("snapshot", snapshot("hello"), 2)] if len(seen) == 1 else later or []

        async def body():
            for item in frames:
                yield item

        return StreamingResponse(body(), media_type="text/event-stream")

    return Starlette(routes=[Route("/sessions/{sid}/stream", stream)])


async def watch_merged(url: str, *args: str) -> tuple[int, list[str]]:
    """stdout and stderr into one pipe, as on a terminal."""
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [*CLI, "watch", SESSION, *args],
            env={**os.environ, "GATEWAY_URL": url},
            stderr=subprocess.STDOUT,
            check=False,
        )
    return result.returncode, result.stdout.decode().splitlines()


async def test_the_reconnect_message_gets_a_line_of_its_own_and_the_text_goes_on_below():
    grown = {"id": "prt_1", "messageID": MID, "type": "text", "text": "hello world"}
    final = snapshot("hello world") | {"status": "completed", "seq": 3, "live": False}
    update = {"seq": 3, "type": "update", "state": {"status": "completed"}, "messages": [], "parts": [grown]}
    update |= {"removedMessages": [], "removedParts": []}
    with serve_in_thread(gateway([frame("update", update, 3), frame("complete", final, 3)])) as url:
        code, lines = await watch_merged(url)
    assert code == 0, lines
    assert lines[0] == f"{SESSION}  running  (live, ask)"
    assert lines[1] == LEAD + "hello"
    assert lines[2].startswith("connection lost (the stream ended before the session did); reconnecting after event 2")
    assert lines[3:] == ["reconnected", " " * len(LEAD) + " world", "status: completed"]


async def test_a_gateway_that_stays_gone_ends_the_watch_with_one_line_and_exit_1():
    with serve_in_thread(gateway(None)) as url:
        code, lines = await watch_merged(url, "--reconnect-timeout", "2")
    assert code == 1, lines
    assert lines[:2] == [f"{SESSION}  running  (live, ask)", LEAD + "hello"]
    retries = lines[2:-1]
    assert retries and all(line.startswith("connection lost (") for line in retries)
    assert lines[-1].startswith("error: lost the stream and could not resume it within 2s (")
