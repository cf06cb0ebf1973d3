"""SSE framing that every line splitter reads the same: session text cannot end a `data:` line early."""

from __future__ import annotations

import json

import anyio
import httpx
import hypothesis
import pytest

from gateway.sse import escape_line_breaks, format_event
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
    assert format_event("update", dumps({"text": FORGERY}).encode(), 3).decode() == frame


# Text the byte-wise escaping could get wrong if it matched inside another character: the breaks beside characters
# whose UTF-8 holds 0x85, 0xA8, 0xA9 or 0xE2 0x80 (U+2005, U+2026, U+0168, U+2014, U+20A8, U+20A9, U+0145).
TRICKY = hypothesis.strategies.text(alphabet=BREAKS + '\u2005\u2026\u0168\u2014\u20a8\u20a9\u0145a"\\\x00\ud7ff')


@hypothesis.given(text=TRICKY)
@hypothesis.settings(max_examples=300, deadline=None)
def test_escaping_bytes_escapes_the_line_breaks_and_only_them(text):
    """Framing works on UTF-8 bytes (a long snapshot: ~15 ms, was ~55-140 ms by a regular expression over its
    text): the same frame as the characters' escape, and the text read back whole."""
    data = dumps({"text": text})
    expected = "".join(f"\\u{ord(c):04x}" if c in BREAKS else c for c in data)
    assert escape_line_breaks(data.encode()) == expected.encode()
    assert split_events(format_event("update", data.encode(), 1).decode()) == [("update", {"text": text})]


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
