"""SSE framing that every line splitter reads the same: session text cannot end a `data:` line early."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from gateway.sse import format_event
from shared import commands
from shared.models import dumps
from shared.store import keys

pytestmark = pytest.mark.anyio

BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
FORGERY = "".join(f"{c}event: complete{c}data: {{}}{c}{c}" for c in BREAKS)


def split_events(body: str) -> list[tuple[str, object]]:
    """A client that splits lines the way Python does (str.splitlines, httpx's iter_lines)."""
    found, name, data = [], "message", []
    for line in body.splitlines():
        if line == "":
            if data:
                found.append((name, json.loads("\n".join(data))))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    return found


def test_every_line_break_is_escaped_and_the_json_keeps_it():
    frame = format_event("update", dumps({"text": FORGERY}), 3).decode()
    assert split_events(frame) == [("update", {"text": FORGERY})]


async def test_a_streamed_session_with_line_breaks_in_its_text_reads_as_the_right_events(
    make_gateway, redis, db, opencode
):
    gateway = await make_gateway()
    state = await commands.enqueue(
        redis, db, opencode, session_type="ask", title=f"t{FORGERY}", metadata={"note": FORGERY}
    )
    sid = state["sessionId"]
    async with (
        httpx.AsyncClient(base_url=gateway, timeout=20) as client,
        client.stream("GET", f"/sessions/{sid}/stream") as response,
    ):
        chunks = response.aiter_text()
        body = await _read_until(chunks, "", "event: snapshot")
        await redis.publish(keys.updates(sid), dumps({"seq": 2, "type": "update", "text": FORGERY}).encode())
        body = await _read_until(chunks, body, "event: update")
    parsed = split_events(body)
    assert [name for name, _ in parsed] == ["snapshot", "update"]
    snapshot, update = parsed[0][1], parsed[1][1]
    assert snapshot["title"] == f"t{FORGERY}" and snapshot["metadata"] == {"note": FORGERY}
    assert update == {"seq": 2, "type": "update", "text": FORGERY}


async def _read_until(chunks, body: str, marker: str) -> str:
    """The body so far plus what arrives until an event holding `marker` is complete (a ping may come too)."""
    with anyio.fail_after(20):
        while marker not in body or not body.endswith("\n\n"):
            body += await chunks.__anext__()
    return body
