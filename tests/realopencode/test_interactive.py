"""Interactive runs against the real `opencode serve`: a `bash=ask` rule makes the TOOL run wait for a permission
reply, the QUESTION run waits for an answer; both are seen through the gateway's SSE stream, answered with the
CLI, and archived with OpenCode's own messages and every answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from shared import commands
from shared.cli.stream import SessionView, aiter_events
from shared.opencode.client import OpenCodeClient
from shared.store import requests
from tests.helpers import Child, run_cli, wait_for
from tests.realopencode.harness import RealOpenCode

pytestmark = [pytest.mark.anyio, pytest.mark.realopencode]
POLLER_ENV = {"POLL_INTERVAL_MS": "200"}


async def follow(gateway: str, sid: str, until: Callable[[dict[str, Any], bool], bool]) -> dict[str, Any]:
    """The session as an SSE client holds it, once `until(session, completed)` holds (60 s at most)."""
    view = SessionView()
    with anyio.fail_after(60):
        async with (
            httpx.AsyncClient(base_url=gateway, timeout=None) as client,
            client.stream("GET", f"/sessions/{sid}/stream") as response,
        ):
            async for event in aiter_events(response):
                if view.apply(event) and view.state is not None and until(view.state, view.completed):
                    return view.state
    raise AssertionError("the stream ended first")


def waits_on(kind: str) -> Callable[[dict[str, Any], bool], bool]:
    return lambda s, _: s["status"] == "waiting" and any(e["kind"] == kind for e in s.get("pending") or [])


def completed(session: dict[str, Any], done: bool) -> bool:
    return done


async def test_permission_reply_once_and_reject(
    real_opencode: RealOpenCode, make_poller: Callable[..., Child], make_gateway, redis, db, redis_url, schema
) -> None:
    make_poller(real_opencode.url, name="interactive", **POLLER_ENV)
    gateway = await make_gateway()
    env = {"REDIS_URL": redis_url, "DATABASE_URL": schema, "OPENCODE_URL": real_opencode.url}
    async with OpenCodeClient(real_opencode.url) as opencode:
        sids = [
            (
                await commands.enqueue(
                    redis, db, opencode, session_type="ask", prompt="TOOL run it", permission=["bash=ask"]
                )
            )["sessionId"]
            for _ in range(2)
        ]
        allowed, refused = sids
        seen = {sid: await follow(gateway, sid, waits_on("permission")) for sid in sids}
        for session in seen.values():
            [entry] = session["pending"]
            assert entry["permission"] == "bash" and entry["metadata"]["command"] == "echo hello"
            assert entry["tool"]["callID"] in [c["callID"] for c in session["currentToolCalls"]]
        once = ["reply", allowed, seen[allowed]["pending"][0]["id"], "--once", "--by", "alice"]
        assert (await run_cli(once, env)).returncode == 0
        reject = ["reply", refused, seen[refused]["pending"][0]["id"], "--reject", "--message", "not today"]
        assert (await run_cli([*reject, "--by", "bob"], env)).returncode == 0

        finals = {sid: await follow(gateway, sid, completed) for sid in sids}
        for sid in sids:
            assert finals[sid]["status"] == "completed" and finals[sid]["pending"] == []
            assert finals[sid]["messages"] == await opencode.messages(sid)
        ran = finals[allowed]["messages"][1]["parts"]
        assert [p["state"]["status"] for p in ran if p["type"] == "tool"] == ["completed"]
        [tool] = [p for p in finals[refused]["messages"][1]["parts"] if p["type"] == "tool"]
        assert tool["state"]["status"] == "error" and tool["state"]["error"].endswith("not today")
    answers = {sid: [(r.answer, r.answered_by, r.outcome) for r in await requests.of_session(db, sid)] for sid in sids}
    assert answers == {
        allowed: [({"reply": "once"}, "alice", "answered")],
        refused: [({"reply": "reject", "message": "not today"}, "bob", "answered")],
    }


async def test_question_answered_with_a_choice(
    real_opencode: RealOpenCode, make_poller: Callable[..., Child], make_gateway, redis, db, redis_url, schema
) -> None:
    make_poller(real_opencode.url, name="question", **POLLER_ENV)
    gateway = await make_gateway()
    env = {"REDIS_URL": redis_url, "DATABASE_URL": schema, "OPENCODE_URL": real_opencode.url}
    async with OpenCodeClient(real_opencode.url) as opencode:
        sid = (await commands.enqueue(redis, db, opencode, session_type="ask", prompt="QUESTION pick a color"))[
            "sessionId"
        ]
        session = await follow(gateway, sid, waits_on("question"))
        [entry] = session["pending"]
        assert [o["label"] for o in entry["questions"][0]["options"]] == ["Red", "Blue"]
        bad = await run_cli(["answer", sid, entry["id"], "--choice", "Green"], env)
        assert bad.returncode == 2 and "not an option" in bad.stderr
        assert (await run_cli(["answer", sid, entry["id"], "--choice", "Blue", "--by", "carol"], env)).returncode == 0
        final = await follow(gateway, sid, completed)
        assert final["status"] == "completed" and final["messages"] == await opencode.messages(sid)

    async def model_saw_blue() -> bool:
        tool_results = [
            m for r in real_opencode.model.requests for m in r["request"].get("messages", []) if m.get("role") == "tool"
        ]
        return any("Blue" in json.dumps(m.get("content")) for m in tool_results)

    assert await wait_for(model_saw_blue, timeout=5, what="the model's next request carrying the answer")
    [row] = await requests.of_session(db, sid)
    assert (row.answer, row.answered_by) == ({"answers": [["Blue"]]}, "carol")
