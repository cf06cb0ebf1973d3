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


async def _wait_listed(client: httpx.AsyncClient, path: str, sid: str) -> dict[str, Any]:
    async def listed() -> Any:
        found = [r for r in (await client.get(path)).json() if r["sessionID"] == sid]
        return found[0] if found else None

    request: dict[str, Any] = await wait_for(listed, timeout=30, what=f"{path} listing {sid}")
    return request


async def _requests_of(base_url: str) -> dict[str, Any]:
    """A bash=ask TOOL run and a QUESTION run on one server, driven over HTTP: what each lists, and how each ends
    after a reject with a message / an answer."""
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        rules = [{"permission": "bash", "pattern": "*", "action": "ask"}]
        tool_sid = (await client.post("/session", json={"permission": rules})).json()["id"]
        question_sid = (await client.post("/session", json={})).json()["id"]
        for sid, text in ((tool_sid, "TOOL run it"), (question_sid, "QUESTION pick")):
            body = {"parts": [{"type": "text", "text": text}]}
            assert (await client.post(f"/session/{sid}/prompt_async", json=body)).status_code == 204
        out["permission"] = await _wait_listed(client, "/permission", tool_sid)
        out["question"] = await _wait_listed(client, "/question", question_sid)
        reply = {"reply": "reject", "message": "not today"}
        assert (await client.post(f"/permission/{out['permission']['id']}/reply", json=reply)).json() is True
        answered = {"answers": [["Blue"]]}
        assert (await client.post(f"/question/{out['question']['id']}/reply", json=answered)).json() is True
        again = await client.post(f"/permission/{out['permission']['id']}/reply", json={"reply": "once"})
        body = again.json()
        out["again"] = (
            again.status_code,
            sorted(body),
            body["_tag"],
            body["message"].replace(out["permission"]["id"], "ID"),
        )

        async def ended(sid: str) -> Any:
            status = (await client.get("/session/status")).json()
            messages = (await client.get(f"/session/{sid}/message")).json()
            done = sid not in status and messages and "completed" in messages[-1]["info"]["time"]
            return messages if done and messages[-1]["info"].get("finish") == "stop" else None

        out["tool_state"] = (await wait_for(lambda: ended(tool_sid), timeout=30))[1]["parts"][1]["state"]
        out["question_state"] = (await wait_for(lambda: ended(question_sid), timeout=30))[1]["parts"][1]["state"]
    return out


def _shape(value: Any) -> Any:
    """Keys and value types, all the way down (lists by their first item)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


async def test_the_simulator_lists_and_answers_requests_as_the_real_server(
    real_opencode: RealOpenCode, simulator_url: str
) -> None:
    real, simulated = await _requests_of(real_opencode.url), await _requests_of(simulator_url)
    for kind in ("permission", "question"):
        assert _shape(simulated[kind]) == _shape(real[kind]), kind
    for field in ("permission", "patterns", "metadata", "always"):
        assert simulated["permission"][field] == real["permission"][field], field
    assert simulated["question"]["questions"] == real["question"]["questions"]
    assert simulated["again"] == real["again"]
    assert simulated["tool_state"]["status"] == real["tool_state"]["status"] == "error"
    assert simulated["tool_state"]["error"] == real["tool_state"]["error"]
    assert simulated["question_state"]["status"] == real["question_state"]["status"] == "completed"
    assert simulated["question_state"]["output"] == real["question_state"]["output"]
    assert _shape(simulated["question_state"]) == _shape(real["question_state"])
