"""shared.cli.stream: SSE framing as the spec says (CR, LF, CRLF only), and the session the events build."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared.cli.stream import SessionView, StreamEvent, aiter_events, apply_update, iter_events
from shared.errors import OpenCodeError

pytestmark = pytest.mark.anyio

# Every separator str.splitlines (and so httpx's iter_lines) breaks on, but the SSE spec does not.
NOT_NEWLINES = ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
MID = "msg_00000000000000000000000001"


def response(*chunks: bytes | str) -> httpx.Response:
    body = (c.encode() if isinstance(c, str) else c for c in chunks)
    return httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=body)


def events(*chunks: bytes | str) -> list[StreamEvent]:
    return list(iter_events(response(*chunks)))


def frame(name: str, data: object, event_id: int | None = None, newline: str = "\n") -> str:
    head = "" if event_id is None else f"id: {event_id}{newline}"
    return f"{head}event: {name}{newline}data: {json.dumps(data, ensure_ascii=False)}{newline}{newline}"


@pytest.mark.parametrize("separator", NOT_NEWLINES, ids=lambda c: f"U+{ord(c):04X}")
def test_a_unicode_line_separator_inside_data_is_data(separator: str) -> None:
    """A prompt is attacker-controlled: were U+2028 a line break, it could end the data line and forge an event."""
    text = f"a{separator}{separator}event: complete{separator}data: {{}}{separator}{separator}b"
    got = events(frame("snapshot", {"text": text}, 1), frame("update", {"seq": 2}, 2))
    assert got == [StreamEvent("snapshot", {"text": text}, "1"), StreamEvent("update", {"seq": 2}, "2")]


async def test_the_async_reader_frames_the_same() -> None:
    text = "one\u2028two\u2029three"

    async def body() -> AsyncIterator[bytes]:
        yield frame("snapshot", {"text": text}, 7).encode()

    streamed = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())
    assert [e async for e in aiter_events(streamed)] == [StreamEvent("snapshot", {"text": text}, "7")]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_every_spec_newline_ends_a_line(newline: str) -> None:
    body = f"retry: 3000{newline}{newline}" + frame("ping", {"time": 1}, newline=newline) + frame("x", [1], 3, newline)
    assert events(body) == [StreamEvent("ping", {"time": 1}, None), StreamEvent("x", [1], "3")]


def test_events_split_anywhere_between_chunks_are_whole() -> None:
    """Chunk boundaries fall where TCP puts them: inside a field, a CRLF, or a UTF-8 sequence."""
    body = (frame("snapshot", {"text": "é\u2028€"}, 1, "\r\n") + frame("update", {"seq": 2}, 2, "\r\n")).encode()
    expected = [StreamEvent("snapshot", {"text": "é\u2028€"}, "1"), StreamEvent("update", {"seq": 2}, "2")]
    assert events(*(body[i : i + 1] for i in range(len(body)))) == expected
    for cut in range(1, len(body)):
        assert events(body[:cut], body[cut:]) == expected, cut


def test_multi_line_data_comments_and_the_last_event_id() -> None:
    body = ': a comment\n\nevent: update\nid: 4\ndata: {"seq":\ndata: 4}\n\nevent: ping\ndata: {}\n\n'
    # An event without its own id line carries the last one, as EventSource's lastEventId does.
    assert events(body) == [StreamEvent("update", {"seq": 4}, "4"), StreamEvent("ping", {}, "4")]


def test_an_event_that_is_not_json_is_an_error() -> None:
    with pytest.raises(OpenCodeError, match="snapshot event that is not JSON"):
        events("event: snapshot\ndata: {oops\n\n")


def test_a_response_that_is_not_an_event_stream_is_an_error() -> None:
    with pytest.raises(OpenCodeError, match="event stream"):
        list(iter_events(httpx.Response(200, headers={"content-type": "text/html"}, content=b"<html>")))


def snapshot(seq: int, *messages: dict[str, Any]) -> dict[str, Any]:
    return {"sessionId": "ses_x", "status": "running", "messages": list(messages), "seq": seq, "live": True}


def update(seq: int, **change: Any) -> dict[str, Any]:
    return {"seq": seq, "type": "update", "state": {}, "messages": [], "parts": []} | change


def test_apply_update_orders_messages_and_parts_by_id_and_removes() -> None:
    state = snapshot(1)
    second = {"id": "msg_2", "role": "assistant"}
    apply_update(state, update(2, messages=[second], parts=[{"id": "prt_b", "messageID": "msg_2", "type": "text"}]))
    first_parts = [{"id": "prt_a", "messageID": "msg_1", "type": "text"}]
    apply_update(state, update(3, messages=[{"id": "msg_1", "role": "user"}], parts=first_parts))
    apply_update(state, update(4, parts=[{"id": "prt_a", "messageID": "msg_2", "type": "tool"}]))
    assert [m["info"]["id"] for m in state["messages"]] == ["msg_1", "msg_2"]
    assert [p["id"] for p in state["messages"][1]["parts"]] == ["prt_a", "prt_b"]
    apply_update(state, update(5, state={"status": "completed"}, removedMessages=["msg_1"]))
    apply_update(state, update(6, removedParts=[{"id": "prt_b", "messageID": "msg_2"}]))
    assert (state["status"], state["seq"]) == ("completed", 6)
    assert state["messages"] == [{"info": second, "parts": [{"id": "prt_a", "messageID": "msg_2", "type": "tool"}]}]


def test_session_view_follows_snapshot_updates_and_complete() -> None:
    view = SessionView()
    assert not view.apply(StreamEvent("ping", {"time": 1}, None))
    assert view.apply(StreamEvent("snapshot", snapshot(2), "2"))
    assert view.apply(StreamEvent("update", update(3, state={"title": "t"}), "3"))
    assert view.state is not None and (view.state["title"], view.state["seq"], view.last_id) == ("t", 3, "3")
    assert not view.completed
    final = snapshot(4) | {"status": "completed", "live": False}
    assert view.apply(StreamEvent("complete", final, "4"))
    assert view.completed and view.state == final and view.last_id == "4"


@pytest.mark.parametrize("seq", [2, 4, 10])
def test_session_view_refuses_an_update_out_of_order(seq: int) -> None:
    view = SessionView()
    view.apply(StreamEvent("snapshot", snapshot(2), "2"))
    with pytest.raises(OpenCodeError, match=f"update {seq} after seq 2"):
        view.apply(StreamEvent("update", update(seq), str(seq)))


def test_session_view_refuses_an_update_before_any_snapshot() -> None:
    with pytest.raises(OpenCodeError, match="after seq None"):
        SessionView().apply(StreamEvent("update", update(1), "1"))
