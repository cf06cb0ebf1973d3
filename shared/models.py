"""The wire format: live state fields as stored in Redis, the session object clients see, and event bodies.

State lives in three hashes (shared.keys): scalar fields, message infos by id, parts by `messageID/partID`.
OpenCode orders messages and parts by id, so sorting the ids rebuilds its list exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

Status = Literal["pending", "running", "completed", "error", "cancelled"]
STATUSES: tuple[Status, ...] = ("pending", "running", "completed", "error", "cancelled")
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "error", "cancelled"})
SESSION_TYPES = ("ask", "chat", "admin")


def dumps(value: object) -> str:
    """Compact JSON, the one encoding used for every stored and published value."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def part_key(part: Mapping[str, Any]) -> str:
    return f"{part['messageID']}/{part['id']}"


def prompt_entry(message_id: str, text: str) -> str:
    """A queued prompt as stored in `opencode:queue:prompts:{id}` (see README: job wire format)."""
    return dumps({"messageID": message_id, "text": text})


def index_event(event: str, state: Mapping[str, Any]) -> str:
    """Body of a live-index change on `opencode:sessions:updates` (appeared / status / ended)."""
    return dumps(
        {
            "type": event,
            "sessionId": state.get("sessionId"),
            "ticketId": state.get("ticketId"),
            "sessionType": state.get("sessionType"),
            "status": state.get("status"),
            "title": state.get("title"),
            "startedAt": state.get("startedAt"),
            "updatedAt": state.get("updatedAt"),
        }
    )


def as_text(value: object) -> str:
    """Redis answers bytes (decode_responses=False everywhere); everything we store is UTF-8 text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def assemble_state(
    fields: Mapping[bytes | str, bytes | str],
    messages: Mapping[bytes | str, bytes | str],
    parts: Mapping[bytes | str, bytes | str],
) -> dict[str, Any] | None:
    """Rebuild the session object from the three hashes; None when the state hash is empty."""
    if not fields:
        return None
    raw = {as_text(k): as_text(v) for k, v in fields.items()}
    by_message: dict[str, list[Any]] = {}
    for key in sorted(as_text(k) for k in parts):
        message_id = key.split("/", 1)[0]
        by_message.setdefault(message_id, []).append(key)
    parts_text = {as_text(k): as_text(v) for k, v in parts.items()}
    infos = {as_text(k): as_text(v) for k, v in messages.items()}
    message_list = [
        {"info": json.loads(infos[mid]), "parts": [json.loads(parts_text[k]) for k in by_message.get(mid, [])]}
        for mid in sorted(infos)
    ]
    return {
        "sessionId": raw.get("sessionId"),
        "ticketId": raw.get("ticketId") or None,
        "sessionType": raw.get("sessionType"),
        "status": raw.get("status"),
        "title": raw.get("title") or None,
        "messages": message_list,
        "currentToolCalls": json.loads(raw.get("currentToolCalls") or "[]"),
        "error": raw.get("error") or None,
        "startedAt": int(raw.get("startedAt") or 0),
        "updatedAt": int(raw.get("updatedAt") or 0),
        "metadata": json.loads(raw.get("metadata") or "null"),
        "seq": int(raw.get("seq") or 0),
        "live": True,
    }
