"""OpenCode 1.18.33's JSON shapes, written out from the captured facts (opencode-api README and samples)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BASH_ABORTED = "(no output)\n\n<shell_metadata>\nUser aborted the command\n</shell_metadata>"


def _id(prefix: str) -> Callable[[Any], bool]:
    pattern = re.compile(prefix + r"_[0-9a-f]{12}[0-9A-Za-z]{14}")
    return lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None


SES, MSG, PRT, EVT = _id("ses"), _id("msg"), _id("prt"), _id("evt")
HASH = re.compile(r"[0-9a-f]{40}").fullmatch
NUM = (int, float)


@dataclass
class Shape:
    """A JSON object: exactly the `required` keys, plus any of the `optional` ones."""

    required: dict[str, Any]
    optional: dict[str, Any] = field(default_factory=dict)

    def __or__(self, more: dict[str, Any]) -> Shape:
        return Shape(self.required | more, self.optional)


def conform(value: Any, spec: Any, where: str = "$") -> None:
    """spec: a Shape, a type (int excludes bool), a tuple of types, a predicate, or a literal value."""
    if isinstance(spec, Shape):
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        missing = spec.required.keys() - value.keys()
        extra = value.keys() - spec.required.keys() - spec.optional.keys()
        assert not missing and not extra, f"{where}: missing {sorted(missing)}, unexpected {sorted(extra)}"
        for key, item in value.items():
            conform(item, spec.required.get(key, spec.optional.get(key)), f"{where}.{key}")
    elif spec is int:
        assert type(value) is int, f"{where}: expected int, got {value!r}"
    elif isinstance(spec, type | tuple):
        assert isinstance(value, spec) and not isinstance(value, bool), f"{where}: expected {spec}, got {value!r}"
    elif callable(spec):
        assert spec(value), f"{where}: unexpected {value!r}"
    else:
        assert value == spec, f"{where}: expected {spec!r}, got {value!r}"


CACHE = Shape({"read": int, "write": int})
TOKENS = Shape({"input": int, "output": int, "reasoning": int, "cache": CACHE})
STEP_TOKENS = TOKENS | {"total": int}
SESSION = Shape(
    {
        "id": SES,
        "slug": str,
        "projectID": HASH,
        "directory": str,
        "path": "",
        "cost": NUM,
        "tokens": TOKENS,
        "title": str,
        "version": "1.18.33",
        "time": Shape({"created": int, "updated": int}),
    },
    optional={
        "summary": Shape({"additions": int, "deletions": int, "files": int}),
        "agent": str,
        "model": Shape({"id": str, "providerID": str, "variant": str}),
    },
)
USER = Shape(
    {
        "id": MSG,
        "sessionID": SES,
        "role": "user",
        "time": Shape({"created": int}),
        "agent": str,
        "model": Shape({"providerID": str, "modelID": str}),
    },
    optional={"summary": Shape({"diffs": []})},
)
ASSISTANT_BASE = {
    "id": MSG,
    "sessionID": SES,
    "role": "assistant",
    "parentID": MSG,
    "modelID": str,
    "providerID": str,
    "mode": str,
    "agent": str,
    "path": Shape({"cwd": str, "root": str}),
    "cost": NUM,
}
OPEN = Shape(ASSISTANT_BASE | {"time": Shape({"created": int}), "tokens": TOKENS})
COMPLETED_TIME = Shape({"created": int, "completed": int})


def finished(finish: str) -> Shape:
    return Shape(ASSISTANT_BASE | {"time": COMPLETED_TIME, "tokens": STEP_TOKENS, "finish": finish})


def failed(error: Shape) -> Shape:
    return Shape(ASSISTANT_BASE | {"time": COMPLETED_TIME, "tokens": TOKENS, "error": error})


ABORTED = Shape({"name": "MessageAbortedError", "data": Shape({"message": "Aborted"})})


def api_error(status: int, retryable: bool) -> Shape:
    data = {"message": str, "statusCode": status, "isRetryable": retryable, "responseBody": str}
    headers = Shape({"content-length": str, "content-type": str, "date": str, "server": str})
    return Shape(
        {"name": "APIError", "data": Shape(data | {"responseHeaders": headers, "metadata": Shape({"url": str})})}
    )


PART = {"id": PRT, "sessionID": SES, "messageID": MSG}
USER_TEXT = Shape(PART | {"type": "text", "text": str})
STEP_START = Shape(PART | {"type": "step-start", "snapshot": HASH})
SPAN = Shape({"start": int, "end": int})
STREAMING = {"text": "", "time": Shape({"start": int})}
TEXT = Shape(PART | {"type": "text", "text": str, "time": SPAN})
REASONING = Shape(PART | {"type": "reasoning", "text": str, "time": SPAN})


def step_finish(reason: str) -> Shape:
    return Shape(PART | {"type": "step-finish", "reason": reason, "snapshot": HASH, "cost": NUM, "tokens": STEP_TOKENS})


def tool(name: str, state: Shape) -> Shape:
    return Shape(PART | {"type": "tool", "callID": str, "tool": name, "state": state})


PENDING = Shape({"status": "pending", "input": {}, "raw": ""})
RUNNING = Shape(
    {"status": "running", "input": dict, "time": Shape({"start": int})}, optional={"title": str, "metadata": dict}
)
COMPLETED = Shape({"status": "completed", "input": dict, "output": str, "title": str, "metadata": dict, "time": SPAN})
TOOL_ERROR = Shape({"status": "error", "input": dict, "error": str, "time": SPAN})
BASH_METADATA = Shape({"output": str, "exit": int, "truncated": False})
RETRY = Shape({"type": "retry", "attempt": int, "message": str, "next": int})
EVENT = Shape({"id": EVT, "type": str, "properties": dict})
PER, QUE = _id("per"), _id("que")
TOOL_REF = Shape({"messageID": MSG, "callID": str})
PERMISSION_REQUEST = Shape(
    {
        "id": PER,
        "sessionID": SES,
        "permission": str,
        "patterns": list,
        "metadata": dict,
        "always": list,
        "tool": TOOL_REF,
    }
)
OPTION = Shape({"label": str, "description": str})
QUESTION_INFO = Shape({"question": str, "header": str, "options": list}, optional={"multiple": bool, "custom": bool})
QUESTION_REQUEST = Shape({"id": QUE, "sessionID": SES, "questions": list, "tool": TOOL_REF})


def conform_messages(messages: list[dict[str, Any]], specs: list[tuple[Shape, list[Shape]]]) -> None:
    assert len(messages) == len(specs), [m["info"]["role"] for m in messages]
    for i, (message, (info, parts)) in enumerate(zip(messages, specs, strict=True)):
        conform(message, Shape({"info": dict, "parts": list}), f"[{i}]")
        conform(message["info"], info, f"[{i}].info")
        assert len(message["parts"]) == len(parts), [p["type"] for p in message["parts"]]
        for j, (part, spec) in enumerate(zip(message["parts"], parts, strict=True)):
            conform(part, spec, f"[{i}].parts[{j}]")
            assert part["messageID"] == message["info"]["id"]
    ids = [m["info"]["id"] for m in messages]
    assert ids == sorted(ids), "messages are listed by id, and msg_ ids ascend"
    for message in messages:
        part_ids = [p["id"] for p in message["parts"]]
        assert part_ids == sorted(part_ids), "parts are listed by id, and prt_ ids ascend"
