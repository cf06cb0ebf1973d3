"""Odd shapes from OpenCode (tests/odd_shapes.py) are input like any other for the poller: it checks only the ids it
keys the mirror by (`shared.opencode.shapes.is_messages`, `event_apply.PLACED_BY`); everything it reads below them
must take any value without raising, or one odd field would fail its session on every poll. (The CLI's and the
pages' readers: tests/shared/test_cli_odd_shapes.py, tests/browser/test_rendering.py.)
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from poller.completion import outcome, run_finished, run_orphaned
from poller.event_apply import apply_events, keep_streamed_texts, streaming_keys
from poller.mirror import Mirror, current_tool_calls, diff, share_unchanged, with_appends
from poller.writer import stored_form
from shared.usage import Usage
from tests.odd_shapes import odd_transcripts, replaced, transcript, value_at


def events_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same values as records of `/event`: each info and part, and a delta to every field of every part."""
    records: list[dict[str, Any]] = []
    for message in messages:
        records.append({"type": "message.updated", "properties": {"info": message["info"]}})
        for part in message["parts"]:
            records.append({"type": "message.part.updated", "properties": {"part": part}})
            for field in [*part, None]:
                props = {"messageID": part["messageID"], "partID": part["id"], "field": field, "delta": "+"}
                records.append({"type": "message.part.delta", "properties": props})
    return records


CASES = odd_transcripts()


@pytest.mark.parametrize("path,odd,messages", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_reader_of_a_polled_or_streamed_value_takes_any_json(path, odd, messages):
    mirror = Mirror.of(transcript())
    # a poll: compared, kept where unchanged, streamed texts kept, written, decided on
    polled = keep_streamed_texts(mirror, share_unchanged(transcript(), copy.deepcopy(messages), mirror))
    delta = with_appends(mirror, diff(mirror, polled))
    # (a streaming part's text that is not one reads as OpenCode's stored "": the streamed text is kept)
    assert delta or path[-1] == "text" or odd == value_at(transcript(), path), "the odd value is a change to write"
    for part in delta.parts:
        stored_form(part)
    mirror.update(polled)
    streaming_keys(mirror)
    current_tool_calls(polled)
    run_finished(polled, busy=False)
    run_orphaned(polled, busy=False, idle_for_s=60.0, grace_s=1.0)
    outcome(polled, cancel_requested=False)
    Usage.of_messages(polled)
    # the same values on the event stream
    before = Mirror.of(transcript())
    streamed = with_appends(before, apply_events(before, events_of(messages), set()))
    for part in streamed.parts:
        stored_form(part)
    before.apply(streamed)
    streaming_keys(before)


def test_a_delta_extends_a_field_of_text_and_never_an_id_or_a_structure():
    mirror = Mirror.of(transcript())
    props = {"messageID": "msg_2", "partID": "prt_4", "delta": "+"}
    fields = ("id", "messageID", "sessionID", "type", "time", "text")
    records = [{"type": "message.part.delta", "properties": {**props, "field": f}} for f in fields]
    [part] = apply_events(mirror, records).parts
    assert part == {**mirror.parts["msg_2/prt_4"], "text": "so+"}


def test_odd_values_read_as_nothing_decided():
    """A run whose answer's `time` or `state` cannot be read is not taken as finished, nor its tool as live."""
    messages = replaced(transcript(), (1, "info", "time"), "soon")
    assert not run_finished(messages, busy=False)
    assert run_orphaned(messages, busy=False, idle_for_s=60.0, grace_s=1.0)  # idle, yet never closed: as today
    tool = replaced(transcript(), (1, "parts", 1, "state"), "running")
    assert [p["id"] for p in current_tool_calls(transcript())] == ["prt_3"]
    assert current_tool_calls(tool) == []
    assert outcome(replaced(transcript(), (1, "info", "error"), "boom"), cancel_requested=False) == (
        "error",
        "unknown OpenCode error",
    )
