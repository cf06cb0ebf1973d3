from __future__ import annotations

import copy

from poller.mirror import Mirror, diff, merge_tail, share_unchanged, tool_calls_after


def message(mid: str, role: str = "assistant", parts: list | None = None, **info) -> dict:
    return {
        "info": {"id": mid, "sessionID": "ses_x", "role": role, "time": {"created": 1}, **info},
        "parts": parts or [],
    }


def tool(pid: str, mid: str, status: str) -> dict:
    return {
        "id": pid,
        "messageID": mid,
        "sessionID": "ses_x",
        "type": "tool",
        "tool": "bash",
        "state": {"status": status},
    }


def test_unchanged_poll_is_an_empty_delta():
    messages = [message("msg_1", "user", [{"id": "prt_1", "messageID": "msg_1", "type": "text", "text": "hi"}])]
    mirror = Mirror.of(messages)
    assert not diff(mirror, copy.deepcopy(messages))


def test_new_part_is_the_only_upsert():
    before = [message("msg_1", "user"), message("msg_2", parts=[tool("prt_1", "msg_2", "pending")])]
    mirror = Mirror.of(before)
    after = copy.deepcopy(before)
    after[1]["parts"].append({"id": "prt_2", "messageID": "msg_2", "type": "text", "text": ""})
    delta = diff(mirror, after)
    assert delta.infos == []
    assert [p["id"] for p in delta.parts] == ["prt_2"]
    assert delta.tool_calls is None  # still the same pending tool


def test_tool_state_change_updates_current_tool_calls():
    before = [message("msg_2", parts=[tool("prt_1", "msg_2", "running")])]
    mirror = Mirror.of(before)
    after = [message("msg_2", parts=[tool("prt_1", "msg_2", "completed")])]
    delta = diff(mirror, after)
    assert [p["state"]["status"] for p in delta.parts] == ["completed"]
    assert delta.tool_calls == []


def test_info_change_and_removals():
    before = [message("msg_1", "user"), message("msg_2", parts=[tool("prt_1", "msg_2", "completed")])]
    mirror = Mirror.of(before)
    after = [message("msg_1", "user", finish="stop")]
    delta = diff(mirror, after)
    assert [i["id"] for i in delta.infos] == ["msg_1"]
    assert delta.removed_messages == ["msg_2"]
    assert delta.removed_parts == ["msg_2/prt_1"]


def test_merge_tail_joins_on_the_overlap_or_gives_up():
    previous = [message(f"msg_{i}") for i in range(6)]
    tail = [message(f"msg_{i}", finish="stop" if i == 5 else None) for i in range(3, 7)]
    head = previous[:3]
    merged = merge_tail(previous, tail, limit=4)
    assert merged == [*head, *tail]
    assert merged is previous  # updated in place: no new list per poll
    assert merge_tail(previous, [message(f"msg_{i}") for i in range(8, 12)], limit=4) is None
    assert previous == [*head, *tail]  # no overlap: left as it was
    short = merge_tail(previous, tail[:2], limit=4)
    assert short == tail[:2] and short is previous  # shorter than the limit: the whole list, in place too


def test_a_tail_poll_keeps_the_older_tool_calls_and_the_event_path_agrees():
    older = tool("prt_1", "msg_1", "running")
    mirror = Mirror.of([message("msg_1", parts=[older]), message("msg_2")])
    newer = tool("prt_2", "msg_2", "pending")
    mirror.update_tail([message("msg_2", parts=[newer])])
    assert mirror.tool_calls == [older, newer]
    assert tool_calls_after(mirror.tool_calls, {}, []) == [older, newer]


def test_a_poll_keeps_the_older_object_of_every_unchanged_message():
    before = [message("msg_1", "user"), message("msg_2", parts=[tool("prt_1", "msg_2", "running")]), message("msg_3")]
    fetched = copy.deepcopy(before)
    fetched[1]["parts"][0]["state"]["status"] = "completed"
    fetched.append(message("msg_4"))
    expected = copy.deepcopy(fetched)
    shared = share_unchanged(before, fetched)
    assert shared == expected  # the same content, in the same order
    assert [m is b for m, b in zip(shared, before, strict=False)] == [True, True, True]  # every old message stays
    assert before[1] == expected[1]  # ...and the one that changed was updated in place
    assert shared[3] is fetched[3]  # what is new is the fetched one
    assert share_unchanged([], fetched) is fetched


def test_a_message_that_changed_keeps_the_older_object_of_its_unchanged_info_and_parts():
    parts = [tool("prt_1", "msg_2", "completed"), tool("prt_2", "msg_2", "running")]
    before = [message("msg_2", parts=parts)]
    fetched = copy.deepcopy(before)
    fetched[0]["parts"][1]["state"]["status"] = "completed"
    fetched[0]["parts"].append(tool("prt_3", "msg_2", "running"))
    expected = copy.deepcopy(fetched)
    old_info, old_parts, old_list = before[0]["info"], list(before[0]["parts"]), before[0]["parts"]
    [shared] = share_unchanged(before, fetched)
    assert shared == expected[0]
    assert shared is before[0] and shared["parts"] is old_list  # the older message and list, updated in place
    assert shared["info"] is old_info
    assert [p is b for p, b in zip(shared["parts"], old_parts, strict=False)] == [True, False]
    assert shared["parts"][2] is fetched[0]["parts"][2]


def test_a_poll_keeps_what_the_event_stream_already_wrote():
    """A part (or info) new since the last poll but already in the mirror, from the events: the mirror's object."""
    before = [message("msg_2", parts=[tool("prt_1", "msg_2", "completed")])]
    fetched = copy.deepcopy(before)
    fetched[0]["parts"].append(tool("prt_2", "msg_2", "running"))
    fetched.append(message("msg_3", parts=[tool("prt_3", "msg_3", "running")]))
    mirror = Mirror.of(copy.deepcopy(fetched))
    mirror.parts["msg_3/prt_3"] = tool("prt_3", "msg_3", "completed")  # the events know better: not shared
    expected = copy.deepcopy(fetched)
    old_part = before[0]["parts"][0]
    shared = share_unchanged(before, fetched, mirror)
    assert shared == expected
    assert shared[0]["parts"][0] is old_part
    assert shared[0]["parts"][1] is mirror.parts["msg_2/prt_2"]
    assert shared[1]["info"] is mirror.infos["msg_3"]
    assert shared[1]["parts"][0] is fetched[1]["parts"][0]
    assert share_unchanged([], fetched[1:], mirror)[0]["info"] is mirror.infos["msg_3"]
