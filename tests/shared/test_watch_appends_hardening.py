"""`watch` against hostile and out-of-step appends: what does not extend the held text exactly as the gateway's is a
gap (StreamGap: re-sync by snapshot, as opencode-stream.js does), and the terminal shows content, never obeys it."""

from __future__ import annotations

import copy
import os
import sys
from typing import Any

import anyio
import pytest

from shared.cli.render import LivePrinter
from shared.cli.stream import SessionView, StreamEvent, StreamGap, apply_update
from shared.dev.simulator.server import serve_in_thread
from tests.helpers import sse_event, two_connection_gateway

SID = "ses_0000000000000000000000000A"
MID = "msg_002"
INFO = {"id": MID, "role": "assistant"}
CLI = [sys.executable, "-c", "from shared.cli import main; main()"]


def text_part(text: str, **extra: Any) -> dict[str, Any]:
    return {"id": "prt_012", "messageID": MID, "type": "text", "text": text} | extra


def session(seq: int, text: str, **extra: Any) -> dict[str, Any]:
    base = {"sessionId": SID, "status": "running", "sessionType": "ask", "ticketId": None, "error": None}
    return base | {"seq": seq, "live": True, "messages": [{"info": INFO, "parts": [text_part(text)]}]} | extra


def append(seq: int, offset: int, delta: str, **fields: Any) -> dict[str, Any]:
    one = {"messageID": MID, "partID": "prt_012", "field": "text", "offset": offset}
    one |= {"length": offset + len(delta.encode("utf-16-le", "surrogatepass")) // 2, "delta": delta}
    return {"seq": seq, "type": "update", "sessionId": SID, "state": {"updatedAt": seq}, "appends": [one | fields]}


ENDED = {"id": "prt_012", "messageID": MID, "type": "text", "time": {"end": 4}}

# Each was applied before: the part renamed or retyped by `field`, given another length than the gateway's, or
# replaced by a `part` that is another part (or none); a delta or `part` of another type raised TypeError.
MISFITS = {
    "field id": {"field": "id", "offset": 7, "length": 8},
    "field type": {"field": "type", "offset": 4, "length": 5},
    "length not offset + delta": {"length": 99},
    "length counting an emoji as one": {"delta": "\U0001f600", "length": 3},
    "part with another id": {"part": ENDED | {"id": "prt_999"}},
    "part of another message": {"part": ENDED | {"messageID": "msg_777"}},
    "part no object": {"part": "zz"},
    "delta no string": {"delta": 5, "length": 3},
}


@pytest.mark.parametrize("fields", MISFITS.values(), ids=MISFITS.keys())
def test_an_append_that_does_not_extend_the_text_as_the_gateway_does_is_a_gap(fields: dict[str, Any]) -> None:
    state = session(1, "Hi")
    held = copy.deepcopy(state)
    change = append(2, 2, "x")
    change["appends"][0] |= fields
    with pytest.raises(StreamGap):
        apply_update(state, change)
    assert state == held


def test_an_append_is_checked_against_the_part_the_same_update_upserts() -> None:
    """As opencode-stream.js applies them: the whole part first, then the append. Was: the append was applied to
    the text held before, and its result replaced the upserted part."""
    state = session(1, "Hi")
    with pytest.raises(StreamGap, match="offset 2 to a text of length 5"):
        apply_update(state, append(2, 2, "x") | {"parts": [text_part("Hello")]})
    apply_update(state, append(2, 5, "!") | {"parts": [text_part("Hello")]})
    assert state["messages"][0]["parts"] == [text_part("Hello!")]


def test_whole_parts_between_appends_stay_valid_and_a_removed_part_takes_no_append() -> None:
    state = session(1, "Hi")
    apply_update(state, {"seq": 2, "type": "update", "parts": [text_part("Hi, corrected")]})
    apply_update(state, append(3, 13, "!"))
    assert state["messages"][0]["parts"] == [text_part("Hi, corrected!")]
    apply_update(state, {"seq": 4, "type": "update", "removedParts": [{"messageID": MID, "id": "prt_012"}]})
    with pytest.raises(StreamGap, match="does not hold"):
        apply_update(state, append(5, 14, "?"))


def test_what_the_protocol_allows_applies_a_new_type_included() -> None:
    state = session(1, "Hi")
    apply_update(state, append(2, 2, "\x00\u2028<b>\x1b]0;t\x07"))
    apply_update(state, append(3, 13, "", part=ENDED | {"type": "reasoning"}))
    assert state["messages"][0]["parts"] == [ENDED | {"type": "reasoning", "text": "Hi\x00\u2028<b>\x1b]0;t\x07"}]


def test_an_emoji_split_between_two_appends_is_one_character_as_in_the_final_snapshot(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Was: the text held two lone surrogates (printed as `\\ud83d\\ude00`), and the final snapshot, whose JSON
    holds one character, did not extend it: the whole answer was printed again, `(revised)`."""
    state, printer = session(1, "a"), LivePrinter()
    printer.render(state)
    for seq, offset, delta in ((2, 1, " \ud83d"), (3, 3, "\ude00 b")):
        apply_update(state, append(seq, offset, delta))
        printer.render(state)
    assert state["messages"][0]["parts"][0]["text"] == "a \U0001f600 b"
    printer.finish(session(3, "a \U0001f600 b", status="completed", live=False))
    assert capsys.readouterr().out.splitlines()[1:] == ["  assistant text: a \U0001f600 b", "status: completed"]


def test_a_text_that_ends_in_half_an_emoji_prints_it_escaped_at_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    printer = LivePrinter()
    printer.render(session(1, "cut \ud83d"))
    printer.finish(session(2, "cut \ud83d\x1b[2J\r", status="completed", live=False))
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  assistant text: cut \\ud83d\\x1b[2J\\x0d",
        "status: completed",
    ]


@pytest.mark.parametrize("seq", [1, 2, 4])
def test_an_update_out_of_order_is_a_gap_to_resync(seq: int) -> None:
    """Was: a plain OpenCodeError, which ended `watch` (exit 1) where opencode-stream.js re-syncs."""
    view = SessionView()
    with pytest.raises(StreamGap, match="after seq None"):
        view.apply(StreamEvent("update", append(2, 2, "x"), "2"))
    view.apply(StreamEvent("snapshot", session(2, "Hi"), "2"))
    with pytest.raises(StreamGap, match=f"update {seq} after seq 2"):
        view.apply(StreamEvent("update", append(seq, 2, "x"), str(seq)))


@pytest.mark.anyio
async def test_watch_resyncs_after_a_repeated_event_and_ends_with_exactly_the_final_text() -> None:
    """A duplicate event, then (after the re-sync) an emoji split between appends. Was: exit 1 at the duplicate."""
    first = [sse_event("snapshot", session(2, "hello"), 2)]
    first += [sse_event("update", append(3, 5, " world"), 3), sse_event("update", append(3, 5, " world"), 3)]
    final = session(5, "hello world \U0001f600", status="completed", live=False)
    second = [sse_event("snapshot", session(3, "hello world"), 3)]
    second += [sse_event("update", append(4, 11, " \ud83d"), 4), sse_event("update", append(5, 13, "\ude00"), 5)]
    second += [sse_event("complete", final, 5)]
    seen: list[str | None] = []
    with serve_in_thread(two_connection_gateway(seen, first, second)) as url:
        with anyio.fail_after(60):
            done = await anyio.run_process([*CLI, "watch", SID], env={**os.environ, "GATEWAY_URL": url}, check=False)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, err
    assert seen == [None, None]  # the re-sync asks for a snapshot, not a resume
    assert "out of step: the gateway sent update 3 after seq 3" in err
    assert out.splitlines() == [
        f"{SID}  running  (live, ask)",
        "  assistant text: hello world \U0001f600",
        "status: completed",
    ]
