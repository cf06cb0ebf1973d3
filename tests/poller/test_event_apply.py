"""apply_events: the event fast path's pure part."""

from __future__ import annotations

import random

from poller.event_apply import any_streaming, apply_events, keep_streamed_text, keep_streamed_texts, streaming_keys
from poller.mirror import LIVE_TOOL_STATES, Appended, Mirror, with_appends


def text_part(text: str, end: bool = False) -> dict:
    time = {"start": 1, **({"end": 2} if end else {})}
    return {"id": "prt_1", "messageID": "msg_1", "sessionID": "ses_x", "type": "text", "text": text, "time": time}


def delta(piece: str) -> dict:
    props = {"sessionID": "ses_x", "messageID": "msg_1", "partID": "prt_1", "field": "text", "delta": piece}
    return {"type": "message.part.delta", "properties": props}


def updated(part: dict) -> dict:
    return {"type": "message.part.updated", "properties": {"sessionID": "ses_x", "part": part}}


def mirror_with(part: dict) -> Mirror:
    return Mirror.of([{"info": {"id": "msg_1", "role": "assistant"}, "parts": [part]}])


def test_deltas_grow_the_text_and_coalesce_into_one_part():
    change = apply_events(mirror_with(text_part("")), [delta("Hel"), delta("lo")])
    assert [p["text"] for p in change.parts] == ["Hello"]


def test_text_that_only_grew_is_an_append_at_its_length_in_utf16_units():
    mirror = mirror_with(text_part("\U0001f600 hi"))
    change = with_appends(mirror, apply_events(mirror, [delta(" the"), delta("re")]))
    assert change.appends == (Appended("msg_1/prt_1", 5, " there"),)  # the emoji is two UTF-16 units
    assert [p["text"] for p in change.parts] == ["\U0001f600 hi there"]


def test_a_part_that_ends_with_its_text_is_an_append_carrying_its_other_fields():
    mirror = mirror_with(text_part("Hel"))
    change = with_appends(mirror, apply_events(mirror, [delta("lo"), updated(text_part("Hello", end=True))]))
    fields = {k: v for k, v in text_part("", end=True).items() if k != "text"}
    assert change.appends == (Appended("msg_1/prt_1", 3, "lo", fields),)


def test_a_text_that_changed_otherwise_is_no_append():
    mirror = mirror_with(text_part("Hello", end=True))
    assert with_appends(mirror, apply_events(mirror, [updated(text_part("Help", end=True))])).appends == ()


def test_a_stored_empty_text_never_takes_streamed_text_back():
    mirror = mirror_with(text_part("Hello"))
    assert keep_streamed_text(text_part(""), mirror.parts["msg_1/prt_1"])["text"] == "Hello"
    assert keep_streamed_text(text_part("Hello world", end=True), mirror.parts["msg_1/prt_1"])["text"] == "Hello world"
    assert not apply_events(mirror, [updated(text_part(""))])  # the stored "" changes nothing


def test_after_a_gap_a_streaming_part_is_frozen_until_it_is_stored_again():
    mirror = mirror_with(text_part("Slow a"))
    frozen = streaming_keys(mirror)
    assert frozen == {"msg_1/prt_1"}
    assert not apply_events(mirror, [delta("n")], frozen)  # "Slow a" + "n" would skip what was missed
    final = apply_events(mirror, [updated(text_part("Slow answer", end=True))], frozen)
    assert [p["text"] for p in final.parts] == ["Slow answer"] and frozen == set()


def test_a_part_whose_first_deltas_came_before_it_was_known_is_frozen_until_it_is_stored_again():
    """Deltas to a part the mirror does not hold yet are lost; once the part is known (its stored "" from a poll),
    the next deltas would build a text without its beginning."""
    mirror = Mirror.of([{"info": {"id": "msg_1", "role": "assistant"}, "parts": []}])
    frozen: set[str] = set()
    assert not apply_events(mirror, [delta("Slow a")], frozen)
    assert frozen == {"msg_1/prt_1"}
    mirror = mirror_with(text_part(""))  # a poll brought the part as OpenCode stores it while it streams
    assert not apply_events(mirror, [delta("nswer")], frozen)
    final = apply_events(mirror, [updated(text_part("Slow answer", end=True))], frozen)
    assert [p["text"] for p in final.parts] == ["Slow answer"] and frozen == set()


def test_deltas_that_come_after_a_poll_saw_the_part_end_change_nothing():
    """The list and the event stream are two connections: a poll can bring the part whole and ended while its last
    deltas are still on the way. Appended, they would repeat the end of the text."""
    mirror = mirror_with(text_part("Slow answer", end=True))
    assert not apply_events(mirror, [delta("swer")])
    assert not apply_events(mirror, [delta("swer"), updated(text_part("Slow answer", end=True))])


def test_records_older_than_a_poll_that_saw_a_part_or_message_finished_never_take_it_back():
    """A poll can bring a part or message finished while the records of its last moments arrive in a batch of their
    own: a tool `running` again, an answer back to "" (then regrown by its deltas), a message no longer completed."""
    tool = {"id": "prt_1", "messageID": "msg_1", "sessionID": "ses_x", "type": "tool", "tool": "bash"}
    done = {**tool, "state": {"status": "completed", "output": "hello"}}
    mirror = mirror_with(done)
    for status in ("pending", "running"):
        assert not apply_events(mirror, [updated({**tool, "state": {"status": status}})])
    assert apply_events(mirror, [updated({**tool, "state": {"status": "error"}})]).parts  # finished another way

    mirror = mirror_with(text_part("Slow answer", end=True))
    assert not apply_events(mirror, [updated(text_part("")), delta("Slow"), updated(text_part("Slow"))])
    assert not apply_events(mirror, [updated(text_part("Slow answer", end=True))])

    info = {"id": "msg_1", "role": "assistant", "time": {"created": 1, "completed": 2}, "cost": 0.5}
    mirror = Mirror.of([{"info": info, "parts": []}])
    older = {"type": "message.updated", "properties": {"info": {**info, "time": {"created": 1}, "cost": 0.1}}}
    assert not apply_events(mirror, [older])
    newer = {"type": "message.updated", "properties": {"info": {**info, "cost": 0.6}}}
    assert apply_events(mirror, [older, newer]).infos == [newer["properties"]["info"]]


def test_removed_messages_take_their_parts_with_them():
    mirror = mirror_with(text_part("x", end=True))
    change = apply_events(mirror, [{"type": "message.removed", "properties": {"messageID": "msg_1"}}])
    assert change.removed_messages == ["msg_1"] and change.removed_parts == ["msg_1/prt_1"]


def test_the_tool_calls_the_events_leave_are_the_live_tools_of_the_whole_session():
    """The event path keeps currentToolCalls from the tool calls and the touched parts alone; over random runs of
    tool calls that start, finish, come back and go (parts and whole messages), it always equals the live tool parts
    of the whole mirror, in key order."""
    rng = random.Random(7)
    for _ in range(200):
        mirror = Mirror.of([{"info": {"id": "msg_1", "role": "assistant"}, "parts": []}])
        for _ in range(12):
            events = []
            for _ in range(rng.randint(1, 4)):
                mid, pid = f"msg_{rng.randint(1, 3)}", f"prt_{rng.randint(1, 6)}"
                kind = rng.random()
                if kind < 0.6:
                    status = rng.choice(["pending", "running", "completed", "error"])
                    part = {"id": pid, "messageID": mid, "type": "tool", "state": {"status": status}}
                    events.append(updated(part if rng.random() < 0.8 else {**part, "type": "text", "text": "x"}))
                elif kind < 0.85:
                    props = {"sessionID": "ses_x", "messageID": mid, "partID": pid}
                    events.append({"type": "message.part.removed", "properties": props})
                else:
                    events.append({"type": "message.removed", "properties": {"sessionID": "ses_x", "messageID": mid}})
            change = apply_events(mirror, events)
            mirror.apply(change)
            live = [mirror.parts[k] for k in sorted(mirror.parts) if _live_tool(mirror.parts[k])]
            assert mirror.tool_calls == live


def _live_tool(part: dict) -> bool:
    return part.get("type") == "tool" and part["state"]["status"] in LIVE_TOOL_STATES


def test_a_users_text_which_has_no_time_is_never_taken_for_a_streaming_one() -> None:
    """OpenCode times the parts it writes (`time.start`, then `time.end`); a user's part has no `time`. Taken for a
    part still streaming, every user message was looked at on every poll, and one in the settled messages of a
    whole list had them all looked at again."""
    user = {"id": "prt_u", "messageID": "msg_1", "sessionID": "ses_1", "type": "text", "text": "a question"}
    streaming = {
        "id": "prt_a",
        "messageID": "msg_2",
        "sessionID": "ses_1",
        "type": "text",
        "text": "",
        "time": {"start": 1},
    }
    messages = [
        {"info": {"id": "msg_1", "role": "user"}, "parts": [user]},
        {"info": {"id": "msg_2", "role": "assistant"}, "parts": [streaming]},
    ]
    mirror = Mirror.of(messages)
    assert streaming_keys(mirror) == {"msg_2/prt_a"}
    assert not any_streaming(messages[:1]) and any_streaming(messages)
    polled = keep_streamed_texts(mirror, messages)
    assert polled[0] is messages[0]
