"""The settled head of a message list's body: found where OpenCode's bytes allow it, never trusted past a change.

The bodies here are written as OpenCode writes them (compact JSON, the info's id first); the last test feeds
random edits of a list to a caller that keeps its head across polls, and checks every poll against a full decode.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from shared.models import loads
from shared.opencode.settled import SettledHead, WholeList, head_before, next_head, rest_of

UNSETTLED = 4


def message(i: int, *, text: str = "", tool_input: Any = None) -> dict[str, Any]:
    mid = f"msg_{i:04d}AbCdEfGhIjKlMnOpQrStUv"
    parts: list[dict[str, Any]] = [
        {"id": f"prt_{i:04d}A", "sessionID": "ses_1", "messageID": mid, "type": "text", "text": text or f"m{i} ✓"}
    ]
    if tool_input is not None:
        state = {"status": "completed", "input": tool_input, "output": "ok"}
        parts.append({"id": f"prt_{i:04d}B", "sessionID": "ses_1", "messageID": mid, "type": "tool", "state": state})
    info = {"id": mid, "sessionID": "ses_1", "role": "assistant" if i % 2 else "user", "time": {"created": i}}
    return {"info": info, "parts": parts}


def body(messages: list[Any], *, separators: tuple[str, str] = (",", ":")) -> bytes:
    return json.dumps(messages, separators=separators, ensure_ascii=False).encode()


def poll(raw: bytes, head: SettledHead | None) -> WholeList:
    """What `OpenCodeClient.messages_beyond` does with a body."""
    rest = rest_of(raw, head)
    skipped = head.count if rest is not None and head is not None else 0
    messages = rest if rest is not None else loads(raw)
    return WholeList(messages, skipped, next_head(raw, head, messages, skipped, UNSETTLED))


def test_the_head_holds_all_but_the_newest_messages_and_the_rest_decodes_alone() -> None:
    messages = [message(i) for i in range(10)]
    first = poll(body(messages), None)
    assert (first.skipped, first.messages) == (0, messages)
    assert first.head is not None and first.head.count == 6 and first.head.next_id == messages[6]["info"]["id"]

    messages[-1]["parts"][0]["text"] += " and more"  # the run goes on in its last message
    second = poll(body(messages), first.head)
    assert (second.skipped, second.messages) == (6, messages[6:])
    assert second.head == first.head  # nothing new has settled

    messages += [message(10), message(11)]
    third = poll(body(messages), second.head)
    assert (third.skipped, third.messages) == (6, messages[6:])
    assert third.head is not None and third.head.count == 8  # the head moves on with the list
    assert poll(body(messages), third.head)[:2] == (messages[8:], 8)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m: m[2]["parts"][0].update(text="edited"), id="an older part edited"),
        pytest.param(lambda m: m[0]["info"].update(time={"created": 0, "compacted": 1}), id="an older info changed"),
        pytest.param(lambda m: m.pop(3), id="an older message removed"),
        pytest.param(lambda m: m[5]["parts"].pop(), id="the head's last part removed"),
        pytest.param(lambda m: m.insert(6, message(99)), id="a message put right after the head"),
        pytest.param(lambda m: m.__delitem__(slice(5, None)), id="the list shorter than the head"),
    ],
)
def test_any_change_to_the_head_or_where_it_ends_decodes_the_whole_list(edit: Any) -> None:
    messages = [message(i) for i in range(10)]
    head = poll(body(messages), None).head
    edited = copy.deepcopy(messages)
    edit(edited)
    again = poll(body(edited), head)
    assert (again.skipped, again.messages) == (0, edited)


def test_a_body_written_otherwise_has_no_head_and_is_decoded_in_full() -> None:
    messages = [message(i) for i in range(10)]
    spaced = body(messages, separators=(", ", ": "))  # a proxy that reformats JSON
    assert poll(spaced, None).head is None
    assert poll(spaced, None).messages == messages
    assert poll(body(messages[:UNSETTLED]), None).head is None  # nothing has settled yet


def test_a_look_alike_of_the_next_message_inside_an_older_one_is_never_taken_for_the_boundary() -> None:
    """A tool's input may hold anything, also the bytes `,{"info":{"id":"msg_…"` of a message still to come: the
    head then ends inside a message, the rest does not parse as a list, and the whole body is decoded."""
    messages = [message(i) for i in range(10)]
    decoy = [0, {"info": {"id": messages[6]["info"]["id"]}, "parts": []}]  # `,{"info":{"id":"msg_0006…"`
    messages[2] = message(2, tool_input=decoy)
    raw = body(messages)
    head = head_before(raw, messages[6]["info"]["id"], 6)
    assert head is not None and head.size < raw.index(b'{"info":{"id":"msg_0003')  # found in message 2
    again = poll(raw, head)
    assert (again.skipped, again.messages) == (0, messages)


def test_a_head_whose_bytes_are_the_same_but_whose_next_message_differs_is_not_used() -> None:
    messages = [message(i) for i in range(10)]
    raw = body(messages)
    head = next_head(raw, None, messages, 0, UNSETTLED)
    assert head is not None
    assert rest_of(raw, SettledHead(head.size, head.digest, head.count, "msg_other")) is None
    assert rest_of(raw, SettledHead(head.size, head.digest + 1, head.count, head.next_id)) is None
    assert rest_of(raw, head) == messages[6:]


def test_random_edits_of_a_list_polled_with_its_head_always_give_the_full_decode() -> None:
    """A session's list as OpenCode changes it between polls: runs that add messages and grow the last one, and
    now and then an edit of an older message (compaction, a deleted message or part, text with every kind of
    character). The head is kept across polls as the poller keeps it; each poll must equal the whole list."""
    rng = random.Random(7)
    texts = ["plain", 'quote " and \\ backslash', "line\nbreak", "ünïcödé ✓ 🚀", "\u2028", '{"info":{"id":"msg_0']
    messages = [message(i) for i in range(6)]
    head: SettledHead | None = None
    held: list[Any] = []
    reused = 0
    for step in range(400):
        roll = rng.random()
        if roll < 0.45:
            messages[-1]["parts"][0]["text"] += rng.choice(texts)
        elif roll < 0.7:
            messages.append(message(100 + step, text=rng.choice(texts)))
        elif roll < 0.8 and len(messages) > 1:
            messages.pop(rng.randrange(len(messages) - 1))
        elif roll < 0.85:
            rng.choice(messages)["parts"][0]["text"] = rng.choice(texts)
        elif roll < 0.9:  # the same length: only the bytes tell
            part = rng.choice(messages)["parts"][0]
            part["text"] = part["text"].swapcase()
        else:
            at = rng.randrange(len(messages))
            messages[at] = message(200 + step, tool_input=[1, {"info": {"id": rng.choice(messages)["info"]["id"]}}])
            messages.sort(key=lambda m: m["info"]["id"])
        whole = poll(body(messages), head)
        held = held[: whole.skipped] + whole.messages
        assert held == messages, f"step {step}"
        reused += whole.skipped > 0
        head = whole.head
    assert reused > 100  # the head did its work most of the time
