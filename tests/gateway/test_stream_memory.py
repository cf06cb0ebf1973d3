"""A closed stream is freed by reference count: the gateway's collector thresholds make full collections rare, so
anything a stream leaves in a reference cycle stays in memory until the process ends."""

from __future__ import annotations

import gc
import types
from collections.abc import Awaitable

import httpx
import pytest

from shared import commands
from shared.cli.stream import aiter_events
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


def gateway_garbage() -> list[str]:
    """What a full collection would free of the gateway's (objects, and frames of its code). Starlette's own are
    not counted: the OpenCode simulator serving this test's poller runs in this process too."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = []
        for thing in gc.garbage:
            frame = isinstance(thing, types.FrameType)
            name = thing.f_globals.get("__name__", "") if frame else type(thing).__module__
            if name.startswith("gateway"):
                found.append(f"{name}.{type(thing).__qualname__}")
        return found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()


async def open_streams(gateway: str) -> int:
    async with httpx.AsyncClient(base_url=gateway) as client:
        response = await client.get("/metrics")
    lines = [line for line in response.text.splitlines() if line.startswith("gateway_sse_clients{")]
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in lines))


async def test_streams_the_client_or_the_server_closed_leave_nothing_for_the_collector(
    make_worker, make_gateway, redis, db, opencode
):
    gateway = await make_gateway()
    waiting = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO live")  # no poller yet
    gc.collect()
    gc.disable()
    try:
        async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
            for _ in range(5):  # the client leaves after the snapshot: the server sees a disconnect
                async with client.stream("GET", f"/sessions/{waiting['sessionId']}/stream") as response:
                    async for event in aiter_events(response):
                        assert event.name == "snapshot"
                        break
            await wait_for(lambda: _none(open_streams(gateway)), timeout=10, what="the streams closed")
            assert gateway_garbage() == []

            await make_worker()
            done = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO done")

            async def archived() -> bool:
                response = await client.get(f"/sessions/{done['sessionId']}")
                return response.status_code == 200 and response.json()["live"] is False

            await wait_for(archived, timeout=30, what="the archive")
            for _ in range(5):  # the server ends these: snapshot, complete, close
                async with client.stream("GET", f"/sessions/{done['sessionId']}/stream") as response:
                    assert [event.name async for event in aiter_events(response)] == ["snapshot", "complete"]
            await wait_for(lambda: _none(open_streams(gateway)), timeout=10, what="the streams closed")
            assert gateway_garbage() == []
    finally:
        gc.enable()


async def _none(count: Awaitable[int]) -> bool:
    return await count == 0
