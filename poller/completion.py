"""When a run is finished, and how it ended, decided from OpenCode's own facts.

The rule measured on the real server: the session is absent from `GET /session/status` (idle) and the
newest message is an assistant message with `time.completed` set and either an `error` or a `finish`
other than "tool-calls" (a tool step is followed by another assistant message). No tool part may still
be pending or running.

A run can also be lost: a run in flight when `opencode serve` stops (SIGTERM or SIGKILL) is not resumed or closed
when it starts again on the same database. The assistant message stays open for good (no `time.completed`, no
`error`, no `finish`; a running tool part stays `running`, streamed text stays ""), the session is idle, and no
event or later poll ever says more. `run_orphaned` ends such a run after a grace period.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from poller.mirror import current_tool_calls
from shared.models import Status, list_of, object_of

ABORTED_ERROR = "MessageAbortedError"
ORPHANED_RUN_ERROR = (
    "OpenCode lost the run: the session is idle but its last message never completed (OpenCode restarted?)"
)


def run_finished(messages: Sequence[Any], busy: bool) -> bool:
    """True when OpenCode is idle and the newest message closes the run."""
    if busy or not messages:
        return False
    info = messages[-1].get("info", {})
    if info.get("role") != "assistant" or not completed(info):
        return False
    if current_tool_calls(messages):
        return False
    return bool(info.get("error")) or info.get("finish") != "tool-calls" or _stopped_at_a_tool_error(messages[-1])


def _stopped_at_a_tool_error(message: Any) -> bool:
    """Idle after a tool step whose tool ended in `error`: OpenCode stopped its loop there (a permission rejected
    without a message, a question dismissed; measured on 1.18.33). Between two steps it stays busy. Was: such a
    session stayed `running` for ever, never archived."""
    return any(
        isinstance(part, dict) and part.get("type") == "tool" and object_of(part.get("state")).get("status") == "error"
        for part in list_of(message.get("parts"))
    )


def unanswered_prompt(messages: Sequence[Any]) -> str | None:
    """The newest message's id when it is a prompt (a user message): nothing answers it yet."""
    info = object_of(messages[-1].get("info")) if messages else {}
    message_id = info.get("id")
    return message_id if info.get("role") == "user" and isinstance(message_id, str) else None


def run_orphaned(messages: Sequence[Any], busy: bool, idle_for_s: float, grace_s: float) -> bool:
    """True when OpenCode has reported the session idle for longer than `grace_s` without a break, yet its newest
    assistant message is still open: nothing will ever complete it (OpenCode restarted mid-run)."""
    if busy or idle_for_s <= grace_s:
        return False
    newest = next((m.get("info", {}) for m in reversed(messages) if m.get("info", {}).get("role") == "assistant"), None)
    return newest is not None and not completed(newest)


def completed(info: Any) -> bool:
    """Whether OpenCode has finished the message (`time.completed`)."""
    return bool(object_of(info.get("time")).get("completed"))


def outcome(messages: Sequence[Any], cancel_requested: bool) -> tuple[Status, str | None]:
    """Final status and error text: an aborted run is `cancelled`, an assistant error is `error`."""
    error = messages[-1].get("info", {}).get("error") if messages else None
    if cancel_requested or object_of(error).get("name") == ABORTED_ERROR:
        return "cancelled", None
    if error:
        return "error", error_text(error)
    return "completed", None


def error_text(error: Any) -> str:
    """OpenCode's own message for an assistant error, falling back to its name."""
    fields = object_of(error)
    return str(object_of(fields.get("data")).get("message") or fields.get("name") or "unknown OpenCode error")
