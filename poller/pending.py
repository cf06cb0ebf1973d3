"""The requests a session waits on (permission requests, questions), as the live state's `pending` shows them.

Learned from OpenCode's events (`permission.asked`, `question.asked`, and the replied/rejected ones) and, as
the reconciler, from the replica's RequestBoard: a board fetch that started after the last event we applied
is the truth, so an event lost in a stream drop is corrected within a tick. Each entry is
`{kind, id, askedAt, tool, …what to decide}`: a permission's `permission`, `patterns`, `metadata` and
`always`; a question's `questions`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from poller.request_board import RequestBoard
from shared.clock import now_ms
from shared.models import list_of, object_of

ASKED = {"permission.asked": "permission", "question.asked": "question"}
ANSWERED = frozenset({"permission.replied", "question.replied", "question.rejected"})
ENDED_TOOL = ("completed", "error")
DECISION_FIELDS = {"permission": ("permission", "patterns", "metadata", "always"), "question": ("questions",)}


def entry(kind: str, request: dict[str, Any], asked_at: int) -> dict[str, Any]:
    """One `pending` entry from OpenCode's request object."""
    fields = {name: request[name] for name in DECISION_FIELDS[kind] if name in request}
    return {"kind": kind, "id": request["id"], "askedAt": asked_at, "tool": request.get("tool"), **fields}


class PendingRequests:
    """One session's pending requests, by id; `changed` says whether they differ from what Redis holds."""

    def __init__(self, session_id: str, known: Sequence[dict[str, Any]]) -> None:
        self._session_id = session_id
        self._by_id: dict[str, dict[str, Any]] = {e["id"]: e for e in known if isinstance(e, dict) and "id" in e}
        self._last_event_at = 0.0  # monotonic: a board fetch older than this is not the truth any more
        self.changed = False
        self.departed: set[str] = set()  # ids OpenCode stopped waiting on, until the tracker has recorded them

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def get(self, request_id: str) -> dict[str, Any] | None:
        return self._by_id.get(request_id)

    def as_list(self) -> list[dict[str, Any]]:
        return sorted(self._by_id.values(), key=lambda e: (e["askedAt"], e["id"]))

    def apply_events(self, events: Iterable[Any]) -> None:
        for event in events:
            kind, props = event.get("type"), event.get("properties") or {}
            if kind in ASKED and isinstance(props.get("id"), str):
                if props["id"] not in self._by_id:
                    self._by_id[props["id"]] = entry(ASKED[kind], props, now_ms())
                    self.changed = True
                self._last_event_at = time.monotonic()
            elif kind in ANSWERED and isinstance(props.get("requestID"), str):
                self.forget(props["requestID"])
                self._last_event_at = time.monotonic()

    def reconcile(self, board: RequestBoard, messages: Sequence[Any] = ()) -> None:
        """Take the board's list as the truth when it was fetched after the last event we applied, less the requests
        whose tool call `messages` show ended: OpenCode (1.18.33) still lists a request of a run it aborted or
        stopped, and a session brought back by a follow-up showed `waiting` on it (and `watch` printed a command to
        answer it) while the follow-up ran."""
        listed = board.requests(self._session_id, self._last_event_at)
        if listed is None:
            return
        now = now_ms()
        fresh = {}
        for request in listed:
            if call_ended(messages, request.get("tool")):
                continue
            known = self._by_id.get(request["id"])
            fresh[request["id"]] = entry(request["kind"], request, known["askedAt"] if known else now)
        if fresh != self._by_id:
            self.departed |= self._by_id.keys() - fresh.keys()
            self._by_id = fresh
            self.changed = True

    def forget(self, request_id: str) -> None:
        """It waits no more (answered): a board fetched before now must not bring it back."""
        self._last_event_at = time.monotonic()
        if self._by_id.pop(request_id, None) is not None:
            self.departed.add(request_id)
            self.changed = True


def call_ended(messages: Sequence[Any], tool: Any) -> bool:
    """Whether the tool call a request waits on (`tool`: its messageID and callID) is known to have ended: its part
    `completed` or in `error`. A message not among `messages` (a tail) is not known: the request stands."""
    if not isinstance(tool, dict):
        return False
    for message in reversed(messages):  # a request's message is among the newest
        if object_of(message.get("info")).get("id") == tool.get("messageID"):
            return any(
                isinstance(part, dict)
                and part.get("type") == "tool"
                and part.get("callID") == tool.get("callID")
                and object_of(part.get("state")).get("status") in ENDED_TOOL
                for part in list_of(message.get("parts"))
            )
    return False
