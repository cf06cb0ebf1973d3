"""What OpenCode's request schema refuses, in its own words: JSON bodies and prompt bodies."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

_PART_TYPES = ("text", "file", "agent", "subtask")
_PARTS_EXPECTED = " | ".join(f'{{ readonly "type": "{t}", ... }}' for t in _PART_TYPES)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def json_body(request: Request) -> tuple[Any, str | None]:
    raw = await request.body()
    try:
        return (json.loads(raw) if raw.strip() else {}), None
    except ValueError:
        return None, f"Invalid JSON: {raw[:80].decode('utf-8', 'replace')}"


def prompt_problem(body: Any) -> str | None:
    """What OpenCode's schema would refuse in a prompt body, in its words; None when the body is fine."""
    if not isinstance(body, dict):
        return f"Expected object, got {compact(body)}"
    if "parts" not in body:
        return 'Missing key\n  at ["parts"]'
    if not isinstance(body["parts"], list):
        return f'Expected array, got {compact(body["parts"])}\n  at ["parts"]'
    for i, part in enumerate(body["parts"]):
        if not isinstance(part, dict) or part.get("type") not in _PART_TYPES:
            return f'Expected {_PARTS_EXPECTED}, got {compact(part)}\n  at ["parts"][{i}]'
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            return f'Missing key\n  at ["parts"][{i}]["text"]'
    message_id = body.get("messageID")
    if message_id is not None and not (isinstance(message_id, str) and message_id.startswith("msg")):
        return f'Expected a string matching the pattern ^msg, got {compact(message_id)}\n  at ["messageID"]'
    model = body.get("model")
    if model is not None and not (
        isinstance(model, dict) and isinstance(model.get("providerID"), str) and isinstance(model.get("modelID"), str)
    ):
        return f'Expected {{ readonly "providerID": string, readonly "modelID": string }}, got {compact(model)}'
    if not isinstance(body.get("agent", ""), str):
        return f'Expected string, got {compact(body["agent"])}\n  at ["agent"]'
    return None
