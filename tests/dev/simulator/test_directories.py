"""The simulator serves several directories as OpenCode's instances do: each `?directory=` has its own sessions,
its own `GET /session/status` and its own `GET /event` stream."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def session_events(sim_url: str, directory: str, seen: list[str], ready: anyio.Event) -> None:
    """Collect the session ids named by the records of one directory's /event stream."""
    async with (
        httpx.AsyncClient(base_url=sim_url, timeout=20) as client,
        client.stream("GET", "/event", params={"directory": directory}) as response,
    ):
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            record = json.loads(line[6:])
            if record["type"] == "server.connected":
                ready.set()
            session_id = record["properties"].get("sessionID")
            if session_id:
                seen.append(session_id)


async def test_each_directory_has_its_own_sessions_status_and_event_stream(sim_url: str, http: httpx.AsyncClient):
    seen: dict[str, list[str]] = {"/repo/a": [], "/repo/b": []}
    async with anyio.create_task_group() as tg:
        for directory, ids in seen.items():
            ready = anyio.Event()
            tg.start_soon(session_events, sim_url, directory, ids, ready)
            await ready.wait()
        created = {}
        for directory in seen:
            session = (await http.post("/session", params={"directory": directory}, json={})).json()
            assert session["directory"] == directory
            created[directory] = session["id"]
            body = {"parts": [{"type": "text", "text": "SLOW answer"}]}
            assert (await http.post(f"/session/{session['id']}/prompt_async", json=body)).status_code == 204
        for directory, sid in created.items():
            busy = (await http.get("/session/status", params={"directory": directory})).json()
            assert set(busy) == {sid}
            listed = (await http.get("/session", params={"directory": directory})).json()
            assert [s["id"] for s in listed] == [sid]

        async def both_heard() -> bool:
            return all(seen.values())

        await wait_for(both_heard, timeout=10, what="each directory's stream names its session")
        tg.cancel_scope.cancel()
    assert set(seen["/repo/a"]) == {created["/repo/a"]}
    assert set(seen["/repo/b"]) == {created["/repo/b"]}
