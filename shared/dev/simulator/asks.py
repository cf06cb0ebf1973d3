"""Permission requests and questions a simulated run waits on, with OpenCode 1.18.33's shapes.

A tool call that a rule marks `ask` (or a `question` call) parks its run on an `Ask` until
`POST /permission/{id}/reply` or `POST /question/{id}/reply|reject` answers it; `GET /permission` and
`GET /question` list what waits, instance-wide. Every change is published as OpenCode's event
(`permission.asked`, `permission.replied`, `question.asked`, `question.replied`, `question.rejected`).
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from shared.dev.simulator.engine import JSON, EventBus, new_id, resume_if_running

KINDS = ("permission", "question")
PERMISSION_REJECTED = "The user rejected permission to use this specific tool call."
PERMISSION_FEEDBACK = "The user rejected permission to use this specific tool call with the following feedback: "
PERMISSION_DENIED = "The user has specified a rule which prevents you from using this specific tool call."
QUESTION_DISMISSED = "The user dismissed this question"


@dataclass
class Ask:
    """One waiting request; `answer` is the reply body (`{"reply", "message"?}`, `{"answers"}`, or `{}` rejected)."""

    kind: str
    request: JSON
    answered: anyio.Event = field(default_factory=anyio.Event)
    answer: JSON | None = None


def _matches(value: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def evaluate(ruleset: Sequence[Any], permission: str, pattern: str) -> str:
    """OpenCode's rule: the last rule whose permission and pattern match decides; none: `allow`."""
    action = "allow"
    for rule in ruleset:
        if (
            isinstance(rule, dict)
            and _matches(permission, str(rule.get("permission")))
            and _matches(pattern, str(rule.get("pattern", "*")))
        ):
            action = str(rule.get("action"))
    return action


class Asks:
    """Every pending request of the server, by id; `replies` counts the answers each id was sent (tests)."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self.pending: dict[str, Ask] = {}
        self.replies: Counter[str] = Counter()

    def listed(self, kind: str) -> list[JSON]:
        return [a.request for a in self.pending.values() if a.kind == kind]

    async def ask(self, kind: str, request: JSON) -> JSON:
        """Publish the request and wait for its answer (the caller's cancel scope ends the wait on abort)."""
        prefix = "per" if kind == "permission" else "que"
        request = {"id": new_id(prefix), **request}
        ask = Ask(kind, request)
        self.pending[request["id"]] = ask
        self._bus.publish(f"{kind}.asked", request)
        try:
            await ask.answered.wait()
        finally:
            self.pending.pop(request["id"], None)
        await resume_if_running()  # an abort answers (rejects) the request and cancels the run together
        assert ask.answer is not None
        return ask.answer

    def reply(self, kind: str, request_id: str, answer: JSON) -> bool:
        """False when no such request waits (OpenCode answers 404)."""
        self.replies[request_id] += 1
        ask = self.pending.get(request_id)
        if ask is None or ask.kind != kind:
            return False
        del self.pending[request_id]
        session_id = ask.request["sessionID"]
        if kind == "permission":
            self._bus.publish(
                "permission.replied", {"sessionID": session_id, "requestID": request_id, "reply": answer["reply"]}
            )
        elif "answers" in answer:
            event = {"sessionID": session_id, "requestID": request_id, "answers": answer["answers"]}
            self._bus.publish("question.replied", event)
        else:
            self._bus.publish("question.rejected", {"sessionID": session_id, "requestID": request_id})
        ask.answer = answer
        ask.answered.set()
        return True

    def drop_session(self, session_id: str) -> None:
        """An aborted run rejects whatever it waited on."""
        for request_id, ask in list(self.pending.items()):
            if ask.request["sessionID"] == session_id:
                self.reply(ask.kind, request_id, {"reply": "reject"} if ask.kind == "permission" else {})
                self.replies[request_id] -= 1  # not an answer anyone sent

    def clear(self) -> None:
        self.pending.clear()
        self.replies.clear()


def question_output(questions: Sequence[JSON], answers: Sequence[Sequence[str]]) -> str:
    """What OpenCode's `question` tool returns to the model once answered."""
    pairs = ", ".join(
        f'"{q["question"]}"="{", ".join(a) if a else "Unanswered"}"'
        for q, a in zip(questions, [*answers, *[[]] * len(questions)], strict=False)
    )
    return f"User has answered your questions: {pairs}. You can now continue with the user's answers in mind."
