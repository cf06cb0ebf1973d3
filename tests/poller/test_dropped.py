"""poller.dropped: a prompt OpenCode left unanswered is run once more, and a session whose prompt stays unanswered
ends, never loops."""

from __future__ import annotations

from typing import Any

from poller.dropped import DROPPED_GRACE_S, DroppedPrompts
from shared.backoff import Backoff


def message(message_id: str, role: str) -> dict[str, Any]:
    return {"info": {"id": message_id, "role": role}, "parts": []}


ANSWERED = [message("msg_1", "user"), message("msg_2", "assistant")]
LEFT = [*ANSWERED, message("msg_3", "user")]


def test_a_prompt_left_newest_is_due_once_after_the_grace():
    dropped = dropped_prompts()
    assert dropped.due(LEFT, DROPPED_GRACE_S - 0.1) is None  # a busy status may not have shown yet
    assert dropped.due(ANSWERED, 60) is None
    assert dropped.due([], 60) is None
    assert dropped.due(LEFT, DROPPED_GRACE_S) == "msg_3"
    assert dropped.due(LEFT, 60) is None  # once


def test_a_prompt_run_again_and_still_unanswered_ends_the_session_after_the_grace():
    dropped = dropped_prompts()
    assert dropped.given_up(LEFT, 60) is None  # not run again yet: due first
    dropped.due(LEFT, DROPPED_GRACE_S)
    assert dropped.given_up(LEFT, 29) is None
    assert dropped.given_up(LEFT, 30) == "OpenCode left the prompt msg_3 unanswered, run twice"
    assert dropped.given_up([*LEFT, message("msg_4", "assistant")], 60) is None  # answered since


def test_running_it_again_that_keeps_failing_on_the_way_is_retried_until_the_retry_deadline():
    """Was: five failures in a row, seconds apart, ended the session, though every OpenCode call of a session is
    retried until OPENCODE_RETRY_DEADLINE_MS (a proxy rate-limiting POSTs while GETs pass)."""
    dropped = dropped_prompts()
    for now in (0.0, 10.0, 50.0):
        assert dropped.due(LEFT, DROPPED_GRACE_S) == "msg_3"
        delay = dropped.retry("msg_3", now)
        assert delay is not None and 0 < delay <= 5.0
    assert dropped.due(LEFT, DROPPED_GRACE_S) == "msg_3"
    assert dropped.retry("msg_3", 60.0) is None  # failing for the deadline: the tracker ends the session
    assert dropped.due(LEFT, 60) is None  # never due again
    fresh = dropped_prompts()
    fresh.due(LEFT, DROPPED_GRACE_S)
    fresh.retry("msg_3", 0.0)
    fresh.sent()  # a send that went through: the failures before it count no more
    assert fresh.retry("msg_3", 100.0) is not None


def dropped_prompts() -> DroppedPrompts:
    return DroppedPrompts(give_up_s=30, backoff=Backoff(0.5, 5.0, 60.0))
