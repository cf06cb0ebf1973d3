"""The simulator's routes: OpenCode 1.18.33's shapes and errors, paging, the event stream, the controls, `python -m`.

Expected shapes are in shapes.py; transitions are read from `GET /event`, so no assertion depends on timing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.dev.simulator.driver import EventStream, messages, new_session, prompt, run_to_end, status
from tests.dev.simulator.shapes import SESSION, Shape, conform, finished

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]


# -- sessions --------------------------------------------------------------------------------------------------


async def test_health_and_sessions(http: httpx.AsyncClient) -> None:
    assert (await http.get("/global/health")).json() == {"healthy": True, "version": "1.18.33"}
    created = (await http.post("/session", json={})).json()
    conform(created, SESSION)
    assert created.keys() == SESSION.required.keys()  # agent, model, summary come with the first prompt
    assert re.fullmatch(r"New session - \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", created["title"])
    titled = (await http.post("/session", json={"title": "mine"})).json()
    listed = (await http.get("/session")).json()
    assert [s["id"] for s in listed][:2] == [titled["id"], created["id"]]  # newest first
    assert titled["id"] < created["id"]  # ses_ ids descend

    await run_to_end(http, created["id"], "ECHO hi")
    await run_to_end(http, titled["id"], "ECHO hi")
    after = (await http.get(f"/session/{created['id']}")).json()
    conform(after, SESSION)
    assert after.keys() == SESSION.required.keys() | SESSION.optional.keys()
    assert after["title"] == "Scripted test session" and after["tokens"]["output"] > 0
    assert (await http.get(f"/session/{titled['id']}")).json()["title"] == "mine"


async def test_http_errors(http: httpx.AsyncClient) -> None:
    missing = "ses_doesnotexist000000000000"
    not_found = {"name": "NotFoundError", "data": {"message": f"Session not found: {missing}"}}
    for method, path in [("GET", ""), ("GET", "/message"), ("POST", "/prompt_async")]:
        resp = await http.request(method, f"/session/{missing}{path}", json={"parts": [{"type": "text", "text": "x"}]})
        assert (resp.status_code, resp.json()) == (404, not_found)
    assert (await http.post(f"/session/{missing}/abort")).json() is True

    resp = await http.get("/session/not-a-session-id/message")
    assert resp.status_code == 500
    conform(resp.json(), Shape({"name": "UnknownError", "data": Shape({"message": str, "ref": _ref})}))

    session_id = await new_session(http)
    resp = await http.post(f"/session/{session_id}/prompt_async", json={"nope": 1})
    missing_parts = {"name": "BadRequest", "data": {"message": 'Missing key\n  at ["parts"]', "kind": "Payload"}}
    assert (resp.status_code, resp.json()) == (400, missing_parts)
    resp = await http.post(f"/session/{session_id}/message", json={"parts": [{"type": "bogus"}]})
    assert resp.status_code == 400 and resp.json()["data"]["message"].endswith(
        'got {"type":"bogus"}\n  at ["parts"][0]'
    )
    assert await messages(http, session_id) == []


def _ref(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"err_[0-9a-f]{8}", value) is not None


async def test_blocking_message_returns_last_assistant(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    body = {"parts": [{"type": "text", "text": "TOOL blocking"}]}
    reply = (await http.post(f"/session/{session_id}/message", json=body)).json()
    conform(reply, Shape({"info": finished("stop"), "parts": list}))
    msgs = await messages(http, session_id)
    assert reply == msgs[-1] and len(msgs) == 3


async def test_limit_pages_with_cursor(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    await run_to_end(http, session_id, "ECHO one")
    full = await run_to_end(http, session_id, "ECHO two")
    assert len(full) == 4
    resp = await http.get(f"/session/{session_id}/message", params={"limit": 1})
    assert resp.json() == full[-1:]
    cursor = resp.headers["x-next-cursor"]
    link = f'<{http.base_url.join(f"/session/{session_id}/message")}?limit=1&before={cursor}>; rel="next"'
    assert resp.headers["link"] == link
    assert json.loads(base64.urlsafe_b64decode(cursor + "==")) == {
        "id": full[-1]["info"]["id"],
        "time": full[-1]["info"]["time"]["created"],
    }
    pages, params = [resp.json()], {"limit": "3", "before": cursor}
    while True:
        resp = await http.get(f"/session/{session_id}/message", params=params)
        pages.insert(0, resp.json())
        if "x-next-cursor" not in resp.headers:
            break
        params["before"] = resp.headers["x-next-cursor"]
    assert [m for page in pages for m in page] == full
    everything = await http.get(f"/session/{session_id}/message", params={"limit": 10})
    assert everything.json() == full and "link" not in everything.headers
    resp = await http.get(f"/session/{session_id}/message", params={"before": full[1]["info"]["id"]})
    assert (resp.status_code, resp.json()) == (400, {"_tag": "BadRequest"})


# -- events, controls, process ---------------------------------------------------------------------------------


async def test_event_stream_heartbeat(sim_url: str) -> None:
    async with EventStream(sim_url) as events:
        await events.until(lambda e: e["type"] == "server.heartbeat")
    assert events.seen[-1]["properties"] == {}


async def test_sim_events_publishes_records_as_given(sim_url: str, http: httpx.AsyncClient) -> None:
    odd = {"type": "message.part.updated", "properties": {"sessionID": "ses_x", "part": "not an object"}}
    async with httpx.AsyncClient(base_url=sim_url, timeout=20) as client, client.stream("GET", "/event") as stream:
        lines = stream.aiter_lines()
        assert json.loads((await anext(lines))[len("data: ") :])["type"] == "server.connected"
        assert (await http.post("/__sim/events", json=[odd])).json() == 1
        seen = json.loads((await anext(line async for line in lines if line))[len("data: ") :])
    assert {k: v for k, v in seen.items() if k != "id"} == odd
    for bad in ({"type": "x", "properties": {}}, [{"type": 1, "properties": {}}], [{"type": "x", "properties": []}]):
        assert (await http.post("/__sim/events", json=bad)).status_code == 400


async def test_sim_controls(http: httpx.AsyncClient) -> None:
    resp = await http.post("/__sim/faults", json={"kind": "error500", "path": "/global/health", "count": 2})
    assert resp.json() == [{"kind": "error500", "path": "/global/health", "method": None, "count": 2, "ms": 0}]
    assert [(await http.get("/global/health")).status_code for _ in range(3)] == [500, 500, 200]
    assert (await http.post("/__sim/faults", json={"kind": "nope"})).status_code == 400
    await http.post("/__sim/faults", json={"kind": "malformed"})
    assert (await http.get("/__sim/faults")).json()[0]["kind"] == "malformed"
    assert (await http.delete("/__sim/faults")).json() == []
    assert (await http.get("/global/health")).json()["healthy"] is True

    session_id = await new_session(http)
    await prompt(http, session_id, "SLOW interrupted by a reset")
    assert (await http.post("/__sim/reset")).json() is True
    assert (await http.get(f"/session/{session_id}")).status_code == 404
    assert await status(http) == {}
    stats = (await http.get("/__sim/stats")).json()
    assert stats["prompt_async"] == {"total": 0, "by_session": {}, "by_message_id": {}}


async def test_runs_as_a_process(tmp_path: Path) -> None:
    port_file = anyio.Path(tmp_path / "port")
    cmd = [sys.executable, "-m", "shared.dev.simulator", "--port", "0", "--port-file", str(port_file)]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    process = await anyio.open_process([*cmd, "--speed", "4"], cwd=ROOT, env=env, stdout=None, stderr=None)
    try:
        with anyio.fail_after(20):
            while not await port_file.exists():
                assert process.returncode is None, "the simulator process exited"
                await anyio.sleep(0.05)
        port = await port_file.read_text()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert (await http.get("/global/health")).json()["version"] == "1.18.33"
            session_id = await new_session(http)
            msgs = await run_to_end(http, session_id, "ECHO from a process")
            assert msgs[-1]["parts"][1]["text"] == "ECHO: ECHO from a process"
    finally:
        process.terminate()
        with anyio.fail_after(15):
            await process.wait()
