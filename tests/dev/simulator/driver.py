"""A few ways to drive the simulator over HTTP and read what it did from `GET /event`, without timing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx

from shared.ids import new_message_id
from tests.dev.simulator.shapes import EVENT, conform


async def new_session(http: httpx.AsyncClient, **body: Any) -> str:
    resp = await http.post("/session", json=body)
    assert resp.status_code == 200
    return str(resp.json()["id"])


async def prompt(http: httpx.AsyncClient, session_id: str, text: str, message_id: str | None = None) -> str:
    message_id = message_id or new_message_id()
    body = {"messageID": message_id, "parts": [{"type": "text", "text": text}]}
    resp = await http.post(f"/session/{session_id}/prompt_async", json=body)
    assert resp.status_code == 204 and resp.content == b""
    return message_id


async def messages(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    resp = await http.get(f"/session/{session_id}/message")
    assert resp.status_code == 200
    return list(resp.json())


async def status(http: httpx.AsyncClient) -> dict[str, Any]:
    return dict((await http.get("/session/status")).json())


def is_finished(session_status: dict[str, Any], session_id: str, msgs: list[dict[str, Any]]) -> bool:
    """The README's rule: absent from /session/status, newest message a completed, final assistant step."""
    if session_id in session_status or not msgs:
        return False
    info = msgs[-1]["info"]
    return (
        info["role"] == "assistant"
        and "completed" in info["time"]
        and ("error" in info or info["finish"] != "tool-calls")
    )


async def wait_for(http: httpx.AsyncClient, session_id: str, check: Callable[[list[Any]], bool]) -> list[Any]:
    """Poll the message list until `check` holds (20 s at most)."""
    with anyio.fail_after(20):
        while True:
            if check(msgs := await messages(http, session_id)):
                return msgs
            await anyio.sleep(0.02)


async def wait_status(http: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    with anyio.fail_after(20):
        while True:
            if check(found := await status(http)):
                return found
            await anyio.sleep(0.02)


async def run_to_end(http: httpx.AsyncClient, session_id: str, text: str) -> list[dict[str, Any]]:
    """Prompt, then poll until the README's completion rule holds."""
    await prompt(http, session_id, text)
    with anyio.fail_after(20):
        while True:
            msgs = await messages(http, session_id)
            if is_finished(await status(http), session_id, msgs):
                return msgs
            await anyio.sleep(0.02)


class EventStream:
    """`GET /event`, subscribed before the test acts (the server sends server.connected once subscribed)."""

    def __init__(self, base_url: str) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=20)
        self.seen: list[dict[str, Any]] = []

    async def __aenter__(self) -> EventStream:
        self._response = await self._client.send(self._client.build_request("GET", "/event"), stream=True)
        assert self._response.headers["content-type"] == "text/event-stream"
        self._lines = self._response.aiter_lines()
        connected = await self.next()
        assert connected["type"] == "server.connected"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._response.aclose()
        await self._client.aclose()

    async def next(self) -> dict[str, Any]:
        async for line in self._lines:
            if line:
                assert line.startswith("data: "), line  # only data lines: no event:/id: fields
                event = json.loads(line[len("data: ") :])
                conform(event, EVENT)
                self.seen.append(event)
                return dict(event)
        raise AssertionError("event stream ended")

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with anyio.fail_after(20):
            while not predicate(await self.next()):
                pass
        return self.seen

    def of(self, session_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(e["type"], e["properties"]) for e in self.seen if e["properties"].get("sessionID") == session_id]


def step_end(timeline: list[tuple[str, dict[str, Any]]], message_id: str) -> list[str]:
    seen = []
    for kind, props in timeline:
        if kind == "message.part.updated" and props["part"]["messageID"] == message_id:
            seen += ["step-finish"] if props["part"]["type"] == "step-finish" else []
        elif kind == "message.updated" and props["info"]["id"] == message_id:
            info = props["info"]
            seen += ["completed"] if "completed" in info["time"] else ["finish"] if "finish" in info else []
    return seen


def idle_event(session_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "session.idle" and e["properties"]["sessionID"] == session_id
