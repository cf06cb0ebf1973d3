"""Odd shapes from OpenCode are input like any other: every value below the ids may be of any JSON type.

OpenCode's schema says what each field holds; another version, a plugin or a proxy may send something else. The
poller checks only the ids it keys the mirror by (`_is_messages`, `event_apply.PLACED_BY`); everything it reads
below them must take any value without raising, or one odd field would fail its session on every poll.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from poller.completion import outcome, run_finished, run_orphaned
from poller.event_apply import apply_events, keep_streamed_texts, streaming_keys
from poller.mirror import Mirror, current_tool_calls, diff, share_unchanged, with_appends
from poller.writer import stored_form
from shared.cli.render import session_lines
from shared.usage import Usage

ODD_VALUES = [None, "", "x", 0, 7.5, True, [], ["x"], {}, {"x": 1}]
IDS = {"id", "messageID"}  # what the client checks before the poller sees a list (shared.opencode.client)


def transcript() -> list[dict[str, Any]]:
    """A run in progress: a prompt, then an answer thinking, running a tool and writing text."""
    user = {"id": "msg_1", "sessionID": "ses_x", "role": "user", "time": {"created": 1}}
    answer = {
        "id": "msg_2",
        "sessionID": "ses_x",
        "role": "assistant",
        "parentID": "msg_1",
        "time": {"created": 2, "completed": 9},
        "finish": "stop",
        "error": {"name": "APIError", "data": {"message": "boom"}},
        "cost": 0.5,
        "tokens": {"input": 1, "output": 2, "reasoning": 0, "cache": {"read": 0, "write": 0}},
    }
    part = {"messageID": "msg_2", "sessionID": "ses_x"}
    return [
        {"info": user, "parts": [{"id": "prt_1", **part, "messageID": "msg_1", "type": "text", "text": "hi"}]},
        {
            "info": answer,
            "parts": [
                {"id": "prt_2", **part, "type": "reasoning", "text": "hm", "time": {"start": 3}},
                {"id": "prt_3", **part, "type": "tool", "tool": "bash", "state": {"status": "running", "input": {}}},
                {"id": "prt_4", **part, "type": "text", "text": "so", "time": {"start": 4}},
            ],
        },
    ]


def paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place below a message's info or part, except the ids the client checks."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        here = (*path, key)
        depth = 3 if here[1:2] == ("info",) else 4  # the first level inside an info, or inside a part
        if len(here) > depth or (len(here) == depth and key not in IDS):
            yield here
        yield from paths(inner, here)


def value_at(messages: list[dict[str, Any]], path: tuple[Any, ...]) -> Any:
    value: Any = messages
    for key in path:
        value = value[key]
    return value  # (Python's 1 == True == 1.0: a value that changes only so is not a change to it)


def twisted(path: tuple[Any, ...], odd: Any) -> list[dict[str, Any]]:
    messages = transcript()
    holder: Any = messages
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = odd
    return messages


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


CASES = [(path, odd) for path in sorted(set(paths(transcript())), key=str) for odd in ODD_VALUES]


@pytest.mark.parametrize("path,odd", CASES, ids=[f"{'.'.join(map(str, p))}={o!r}" for p, o in CASES])
def test_every_reader_of_a_polled_or_streamed_value_takes_any_json(path, odd):
    mirror = Mirror.of(transcript())
    messages = twisted(path, odd)
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
    session_lines({"sessionId": "ses_x", "status": "running", "messages": polled})
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
    messages = twisted((1, "info", "time"), "soon")
    assert not run_finished(messages, busy=False)
    assert run_orphaned(messages, busy=False, idle_for_s=60.0, grace_s=1.0)  # idle, yet never closed: as today
    tool = twisted((1, "parts", 1, "state"), "running")
    assert [p["id"] for p in current_tool_calls(transcript())] == ["prt_3"]
    assert current_tool_calls(tool) == []
    assert outcome(twisted((1, "info", "error"), "boom"), cancel_requested=False) == ("error", "unknown OpenCode error")
