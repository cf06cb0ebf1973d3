"""poller.dropped: a prompt OpenCode left unanswered is run once more, and a session whose prompt stays unanswered
ends, never loops."""

from __future__ import annotations

from typing import Any

from poller.dropped import DROPPED_GRACE_S, RUN_AGAIN_TRIES, DroppedPrompts


def message(message_id: str, role: str) -> dict[str, Any]:
    return {"info": {"id": message_id, "role": role}, "parts": []}


ANSWERED = [message("msg_1", "user"), message("msg_2", "assistant")]
LEFT = [*ANSWERED, message("msg_3", "user")]


def test_a_prompt_left_newest_is_due_once_after_the_grace():
    dropped = DroppedPrompts(give_up_s=30)
    assert dropped.due(LEFT, DROPPED_GRACE_S - 0.1) is None  # a busy status may not have shown yet
    assert dropped.due(ANSWERED, 60) is None
    assert dropped.due([], 60) is None
    assert dropped.due(LEFT, DROPPED_GRACE_S) == "msg_3"
    assert dropped.due(LEFT, 60) is None  # once


def test_a_prompt_run_again_and_still_unanswered_ends_the_session_after_the_grace():
    dropped = DroppedPrompts(give_up_s=30)
    assert dropped.given_up(LEFT, 60) is None  # not run again yet: due first
    dropped.due(LEFT, DROPPED_GRACE_S)
    assert dropped.given_up(LEFT, 29) is None
    assert dropped.given_up(LEFT, 30) == "OpenCode left the prompt msg_3 unanswered, run twice"
    assert dropped.given_up([*LEFT, message("msg_4", "assistant")], 60) is None  # answered since


def test_running_it_again_that_keeps_failing_on_the_way_is_tried_a_bounded_number_of_times():
    dropped = DroppedPrompts(give_up_s=30)
    for attempt in range(1, RUN_AGAIN_TRIES + 1):
        assert dropped.due(LEFT, DROPPED_GRACE_S) == "msg_3"
        assert dropped.retry("msg_3") is (attempt < RUN_AGAIN_TRIES)
    assert dropped.due(LEFT, 60) is None  # the last failure ends the session (the tracker): never due again
