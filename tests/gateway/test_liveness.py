"""A gateway never serves half-dead: the fan-out survives a Redis pause, and a background task that ends fails
/healthz and the process."""

from __future__ import annotations

import dataclasses

import anyio
import httpx
import pytest

from gateway.app import create_app
from gateway.fanout import Fanout
from shared import commands
from shared.cli.stream import aiter_events
from shared.dev.processes import free_port
from shared.store import keys
from tests.gateway.crashing_gateway import CRASH_KEY
from tests.helpers import Child, wait_for, wait_port

pytestmark = pytest.mark.anyio

IDLE_PAST_HEALTH_CHECK_S = 11  # redis-py's pub/sub health check (every 10 s) read from the handler's task


async def test_a_stream_opened_during_a_redis_pause_after_an_idle_spell_works(make_gateway, redis, db, opencode):
    gateway = await make_gateway()
    sid = (await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO pending"))["sessionId"]
    await anyio.sleep(IDLE_PAST_HEALTH_CHECK_S)  # the condition itself: a pub/sub connection idle this long
    await redis.execute_command("CLIENT", "PAUSE", "400")
    async with httpx.AsyncClient(base_url=gateway, timeout=20) as client:
        for _ in range(2):  # the first stream, and one after it
            async with client.stream("GET", f"/sessions/{sid}/stream") as response:
                assert response.status_code == 200, await response.aread()
                names = [event.name async for event in _first(aiter_events(response), 1)]
            assert names == ["snapshot"]
        assert (await client.get(f"/sessions/{sid}")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_a_fanout_reader_error_reconnects_and_tells_clients(make_gateway, redis, db, opencode, monkeypatch):
    gateway = await make_gateway()
    sid = (await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO pending"))["sessionId"]
    original = Fanout._dispatch
    calls = 0

    def failing_once(self, channel, data):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the reader")
        original(self, channel, data)

    monkeypatch.setattr(Fanout, "_dispatch", failing_once)
    names = []
    async with (
        httpx.AsyncClient(base_url=gateway, timeout=20) as client,
        client.stream("GET", f"/sessions/{sid}/stream") as response,
    ):
        with anyio.fail_after(20):
            async for event in _first(aiter_events(response), 2):
                names.append(event.name)
                if names == ["snapshot"]:
                    await redis.publish(keys.updates(sid), b'{"seq":99,"type":"update"}')
    assert names == ["snapshot", "snapshot"]  # LOST: the client took a fresh snapshot after the reconnect
    async with httpx.AsyncClient(base_url=gateway) as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_a_background_task_that_dies_fails_healthz(settings, monkeypatch):
    async def crash(self):
        raise RuntimeError("the reader died")

    monkeypatch.setattr(Fanout, "run", crash)
    app = create_app(dataclasses.replace(settings, gateway_auth=False))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gateway") as client,
    ):

        async def failed():
            response = await client.get("/healthz")
            return response.status_code == 503 and response.json()["status"] == "failed"

        await wait_for(failed, timeout=10)


async def test_the_process_exits_non_zero_when_a_background_task_dies(redis, redis_url, schema):
    port = free_port()
    env = {"REDIS_URL": redis_url, "DATABASE_URL": schema, "GATEWAY_PORT": str(port), "GATEWAY_AUTH": "off"}
    gateway = Child("gateway-crash", "tests.gateway.crashing_gateway", [], env)
    try:
        wait_port(port, child=gateway)
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        await redis.set(CRASH_KEY, 1)
        code = await anyio.to_thread.run_sync(gateway.proc.wait, 20)
        assert code == 1
        assert "background_task_crashed" in gateway.output()
    finally:
        gateway.close()


async def _first(stream, count):
    async for event in stream:
        if event.name == "ping":
            continue
        yield event
        count -= 1
        if count == 0:
            return
