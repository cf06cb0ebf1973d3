"""The gateway through failures: Redis restarted mid-stream, SIGTERM with open streams, the live list."""

from __future__ import annotations

import signal

import anyio
import httpx
import pytest

from shared import commands
from shared.cli.stream import SessionView, aiter_events
from shared.dev.processes import free_port
from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.opencode.client import OpenCodeClient
from shared.store import keys
from tests.helpers import Child, wait_for, wait_port

pytestmark = pytest.mark.anyio


async def test_redis_restarted_mid_stream_the_client_resyncs_and_ends_equal(
    make_worker, make_gateway, redis, db, embedded_redis
):
    with serve_in_thread(create_simulator(1.0)) as sim_url:
        async with OpenCodeClient(sim_url) as oc:
            await make_worker(opencode_url=sim_url)
            gateway = await make_gateway()
            state = await commands.enqueue(redis, db, oc, session_type="ask", prompt="TOOL SLOW survive")
            sid = state["sessionId"]
            view = SessionView()
            names: list[str] = []
            async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
                async with client.stream("GET", f"/sessions/{sid}/stream") as response:
                    async for event in aiter_events(response):
                        names.append(event.name)
                        view.apply(event)
                        if event.name == "update" and names.count("update") == 1:
                            embedded_redis.restart()  # drops the pub/sub connection and every live key
                        if event.name == "complete":
                            break
                archived = (await client.get(f"/sessions/{sid}")).json()
    assert names.count("snapshot") >= 2, names  # the first, and the one after the reconnect
    assert view.completed and view.state == archived
    assert archived["status"] == "completed"


async def test_live_list_stream_shows_sessions_appear_change_and_end(make_worker, make_gateway, redis, db, opencode):
    gateway = await make_gateway()
    seen: list[tuple[str, str | None]] = []
    async with (
        httpx.AsyncClient(base_url=gateway, timeout=60) as client,
        client.stream("GET", "/sessions/live/stream") as response,
    ):
        sid = None
        async for event in aiter_events(response):
            if event.name == "snapshot":
                assert event.data == {"sessions": []}
                sid = (await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO x"))["sessionId"]
                await make_worker()
                continue
            if event.name == "ping":
                continue
            assert event.data["sessionId"] == sid
            seen.append((event.name, event.data["status"]))
            if event.name == "ended":
                break
    assert seen[0] == ("appeared", "pending")
    assert ("status", "running") in seen
    assert seen[-1] == ("ended", "completed")


async def test_sigterm_closes_open_streams_and_exits(redis, db, opencode, schema, redis_url, simulator_url):
    port = free_port()
    env = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": schema,
        "GATEWAY_PORT": str(port),
        "GATEWAY_AUTH": "off",
        "LOG_FORMAT": "json",
    }
    gateway = Child("gateway", "gateway", [], env)
    try:
        wait_port(port, child=gateway)
        state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO pending forever")
        closed = []

        async def hold(i: int) -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                url = f"http://127.0.0.1:{port}/sessions/{state['sessionId']}/stream"
                async with client.stream("GET", url) as response:
                    async for _ in aiter_events(response):
                        pass
            closed.append(i)

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(hold, i)
            await wait_for(lambda: _subscribed(redis, state["sessionId"]), timeout=10)
            gateway.signal(signal.SIGTERM)
        assert sorted(closed) == [0, 1, 2]  # the server ended every stream itself
        # uvicorn re-raises the signal it handled once shut down: dying "by SIGTERM" is its clean exit
        assert await anyio.to_thread.run_sync(gateway.proc.wait, 10) in (0, -signal.SIGTERM)
        assert "Traceback" not in gateway.output()
        assert "gateway_failed" not in gateway.output()  # a shutdown is not a failure
    finally:
        gateway.close()


async def _subscribed(redis, sid):
    return (await redis.pubsub_numsub(keys.updates(sid)))[0][1] > 0
