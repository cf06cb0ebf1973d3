"""The gateway through failures: Redis restarted mid-stream, SIGTERM with open streams, the live list."""

from __future__ import annotations

import json
import logging
import signal

import anyio
import httpx
import pytest
import structlog

from shared import commands
from shared.cli.stream import SessionView, aiter_events
from shared.dev.processes import free_port
from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.opencode.client import OpenCodeClient
from shared.store import keys
from tests.helpers import Child, wait_for, wait_port

pytestmark = pytest.mark.anyio
DEADLINE_S = 60.0  # far above the backoffs (5 s caps) and the ping interval used here: a deadline, not a timing


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


@pytest.mark.parametrize("stream", ["live", "session"])
async def test_with_redis_down_a_stream_keeps_pinging_and_sends_a_fresh_snapshot_once_it_is_back(
    make_gateway, redis, db, opencode, embedded_redis, caplog, stream
):
    """Was: the live list re-read itself once after a Redis drop, and the failure broke its started response (an
    ASGI traceback, a truncated body); the session stream waited without a ping, so clients took it for dead."""
    gateway = await make_gateway(ping_interval_s=0.5)
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO waits")  # no poller: live
    path = "/sessions/live/stream" if stream == "live" else f"/sessions/{state['sessionId']}/stream"
    names: list[str] = []
    pings_while_waiting = 0
    with structlog.testing.capture_logs() as logs:
        async with (
            httpx.AsyncClient(base_url=gateway, timeout=DEADLINE_S) as client,
            client.stream("GET", path) as response,
        ):
            events = aiter_events(response)
            with anyio.fail_after(DEADLINE_S):
                async for event in events:
                    names.append(event.name)
                    if names == ["snapshot"]:
                        await anyio.to_thread.run_sync(embedded_redis.stop)
                    elif event.name == "ping" and any(log["event"] == "resync_retry" for log in logs):
                        pings_while_waiting += 1
                        if pings_while_waiting == 2:  # the second was sent after the stream began to wait
                            await anyio.to_thread.run_sync(embedded_redis.start)
                    elif event.name == "snapshot":
                        break
            if stream == "live":  # subscribed again: what happens now is streamed
                sid = (await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO x"))["sessionId"]
                with anyio.fail_after(DEADLINE_S):
                    async for event in events:
                        if event.name == "appeared":
                            assert event.data["sessionId"] == sid
                            break
    assert names[0] == "snapshot" and names[-1] == "snapshot" and pings_while_waiting >= 2, names
    assert [log for log in logs if log["log_level"] in ("error", "critical")] == []
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []


async def test_a_live_list_filtered_by_type_pings_however_many_other_events_pass(make_gateway, redis):
    """Was: each event the filter skipped started the ping interval again, so while other sessions changed more
    often than every 15 s a `?type=chat` client (the /ui sessions page) heard nothing, and reconnected every 45 s."""
    gateway = await make_gateway(ping_interval_s=0.5)
    other = {"type": "status", "sessionId": "ses_" + "a" * 26, "sessionType": "ask", "status": "running"}

    async def busy() -> None:
        while True:
            await redis.publish(keys.LIVE_UPDATES, json.dumps(other))
            await anyio.sleep(0.05)  # well within the ping interval

    names: list[str] = []
    async with (
        httpx.AsyncClient(base_url=gateway, timeout=DEADLINE_S) as client,
        client.stream("GET", "/sessions/live/stream?type=chat") as response,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(busy)
        with anyio.fail_after(DEADLINE_S):
            async for event in aiter_events(response):
                names.append(event.name)
                if names.count("ping") == 3:
                    break
        tg.cancel_scope.cancel()
    assert set(names) == {"snapshot", "ping"}, names  # the other type's events are not sent


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
