"""A test-side SSE reader and the client state machine a frontend runs: apply `snapshot` and `update` by seq."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Event:
    name: str
    data: Any
    id: str | None


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    name, data, event_id = "message", [], None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield Event(name, json.loads("\n".join(data)), event_id)
            name, data, event_id = "message", [], None
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line.startswith("id:"):
            event_id = line[3:].strip()


class SessionView:
    """What a browser holds: the session object, advanced one `update` at a time."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None
        self.last_id: str | None = None
        self.completed = False

    def apply(self, event: Event) -> None:
        if event.name == "ping":
            return
        self.last_id = event.id
        if event.name in ("snapshot", "complete"):
            self.state = event.data
            self.completed = event.name == "complete"
            return
        assert event.name == "update", event.name
        assert self.state is not None
        assert event.data["seq"] == self.state["seq"] + 1, (event.data["seq"], self.state["seq"])
        apply_update(self.state, event.data)


def apply_update(state: dict[str, Any], change: dict[str, Any]) -> None:
    """OpenCode orders messages and parts by id; so does this."""
    state.update(change.get("state", {}))
    state["seq"] = change["seq"]
    messages = {m["info"]["id"]: m for m in state["messages"]}
    for info in change["messages"]:
        messages.setdefault(info["id"], {"info": info, "parts": []})["info"] = info
    for part in change["parts"]:
        message = messages.setdefault(part["messageID"], {"info": {"id": part["messageID"]}, "parts": []})
        parts = {p["id"]: p for p in message["parts"]}
        parts[part["id"]] = part
        message["parts"] = [parts[k] for k in sorted(parts)]
    for mid in change["removedMessages"]:
        messages.pop(mid, None)
    for removed in change["removedParts"]:
        message = messages.get(removed["messageID"])
        if message:
            message["parts"] = [p for p in message["parts"] if p["id"] != removed["id"]]
    state["messages"] = [messages[k] for k in sorted(messages)]
