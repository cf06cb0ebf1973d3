"""Live text against a real `opencode serve`: the answer grows in the gateway's stream while OpenCode writes it.

The real server stores a streaming text part as "" until the part ends; the text exists only in its
`message.part.delta` events. So every growing state a client sees here came through the poller's event fast path
(one `GET /event` connection, deltas appended to the mirror), and the archive must still be exactly the real
server's final `GET /session/{id}/message`.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import anyio
import httpx
import pytest

from shared import commands
from shared.cli.stream import SessionView, aiter_events, apply_update
from shared.opencode.client import OpenCodeClient
from tests.realopencode.harness import RealOpenCode
from tests.realopencode.scripted_model import SLOW_CHUNKS

pytestmark = [pytest.mark.anyio, pytest.mark.realopencode]

PROMPT = "SLOW answer, streamed live please"
STREAM_TIMEOUT_S = 60.0


def answer_text(state: dict[str, Any]) -> str:
    texts = [
        p.get("text") or ""
        for m in state["messages"]
        if m["info"]["role"] == "assistant"
        for p in m["parts"]
        if p["type"] == "text"
    ]
    return texts[-1] if texts else ""


async def follow(gateway: str, session_id: str) -> tuple[list[str], dict[str, Any]]:
    """Every distinct answer text the SSE client held before `complete`, and the `complete` event's data."""
    seen: list[str] = []
    state: dict[str, Any] | None = None
    async with (
        httpx.AsyncClient(base_url=gateway, timeout=STREAM_TIMEOUT_S) as client,
        client.stream("GET", f"/sessions/{session_id}/stream") as response,
    ):
        assert response.status_code == 200
        async for event in aiter_events(response):
            if event.name == "snapshot":
                state = copy.deepcopy(event.data)
            elif event.name == "update":
                assert state is not None, "an update before the snapshot"
                apply_update(state, event.data)
            elif event.name == "complete":
                return seen, event.data
            if state is not None and (text := answer_text(state)) and (not seen or seen[-1] != text):
                seen.append(text)
    raise AssertionError(f"the stream ended without complete; texts seen: {seen}")


async def test_the_answer_grows_live_and_the_archive_equals_the_real_server(
    real_opencode: RealOpenCode, make_worker: Any, make_gateway: Any, redis: Any, db: Any
) -> None:
    async with OpenCodeClient(real_opencode.url) as opencode:
        worker = await make_worker(opencode_url=real_opencode.url, poll_interval_s=0.2, poll_interval_events_s=2.0)
        gateway = await make_gateway()
        state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt=PROMPT)
        session_id = state["sessionId"]
        with anyio.fail_after(STREAM_TIMEOUT_S):
            seen, complete = await follow(gateway, session_id)
        server_messages = await opencode.messages(session_id)
        async with httpx.AsyncClient(base_url=gateway) as client:
            archived = (await client.get(f"/sessions/{session_id}")).json()

    final = answer_text({"messages": server_messages})
    assert final == f"Slow answer to: {PROMPT}"
    growing = [text for text in seen if text != final]
    assert len(growing) >= 3, seen  # at least three distinct states before the part ended
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(seen)), seen
    assert len(growing) <= SLOW_CHUNKS

    assert complete["status"] == "completed" and complete["error"] is None
    assert complete["messages"] == server_messages  # same ids, same parts, same content
    assert archived["status"] == "completed"
    assert archived["messages"] == server_messages
    assert worker.router is not None and worker.router.connections == 1


async def test_a_client_resuming_mid_answer_with_last_event_id_ends_with_exactly_the_real_text(
    real_opencode: RealOpenCode, make_worker: Any, make_gateway: Any, redis: Any, db: Any
) -> None:
    """The answer streams as appends; a client that drops mid-answer and resumes with Last-Event-ID must end
    with exactly OpenCode's text, every text it held on the way being a prefix of it (an append at a wrong
    offset would show as anything else)."""
    view = SessionView()
    held: list[str] = []
    appends_after_resume = 0
    async with OpenCodeClient(real_opencode.url) as opencode:
        await make_worker(opencode_url=real_opencode.url, poll_interval_s=0.2, poll_interval_events_s=2.0)
        gateway = await make_gateway()
        state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt=PROMPT)
        url = f"/sessions/{state['sessionId']}/stream"
        with anyio.fail_after(STREAM_TIMEOUT_S):
            async with httpx.AsyncClient(base_url=gateway, timeout=STREAM_TIMEOUT_S) as client:
                async with client.stream("GET", url) as response:
                    async for event in aiter_events(response):
                        view.apply(event)
                        assert view.state is not None and not view.completed
                        held.append(answer_text(view.state))
                        if event.name == "update" and event.data.get("appends") and held[-1]:
                            break  # mid-answer: the connection drops here
                assert view.last_id is not None
                resume = {"Last-Event-ID": view.last_id}
                async with client.stream("GET", url, headers=resume) as response:
                    async for event in aiter_events(response):
                        if event.name == "complete":
                            break
                        view.apply(event)
                        assert view.state is not None
                        held.append(answer_text(view.state))
                        appends_after_resume += bool(event.name == "update" and event.data.get("appends"))
        server_messages = await opencode.messages(state["sessionId"])

    final = answer_text({"messages": server_messages})
    assert final == f"Slow answer to: {PROMPT}"
    assert held[-1] == final  # what the resumed client built, before `complete` replaced it
    assert all(final.startswith(text) for text in held), held
    assert appends_after_resume >= 1, held
