"""A closed stream is freed by reference count: the gateway's collector thresholds make full collections rare, so
anything a stream leaves in a reference cycle stays in memory until the process ends."""

from __future__ import annotations

import gc
from collections.abc import Awaitable

import anyio
import httpx
import pytest

from shared import commands
from shared.cli.stream import aiter_events
from shared.config import Secret
from shared.tokens import Scope, mint_token
from tests.helpers import collector_garbage, wait_for

pytestmark = pytest.mark.anyio
SECRET = "stream-memory-test-secret-of-enough-length"


def gateway_garbage() -> list[str]:
    return collector_garbage("gateway", "shared")


async def open_streams(gateway: str, headers: dict[str, str] | None = None) -> int:
    async with httpx.AsyncClient(base_url=gateway) as client:
        response = await client.get("/metrics", headers=headers)
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


async def test_streams_ended_by_their_tokens_expiry_or_a_leaving_client_leave_nothing_for_the_collector(
    make_gateway, redis, db, opencode
):
    gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="ECHO hi")  # no poller: stays live
    paths = {"session": f"/sessions/{state['sessionId']}/stream", "admin": "/sessions/live/stream"}
    scopes = {"session": Scope("session", state["sessionId"]), "admin": Scope("admin")}
    gc.collect()
    gc.disable()
    try:
        async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:

            async def until_expiry(kind: str) -> None:
                headers = {"Authorization": f"Bearer {mint_token(SECRET, scopes[kind], ttl_s=1)}"}
                async with client.stream("GET", paths[kind], headers=headers) as response:
                    assert [event.name async for event in aiter_events(response)] == ["snapshot", "token-expired"]

            async with anyio.create_task_group() as streams:  # the server ends these at the token's expiry
                for kind in [*paths] * 3:
                    streams.start_soon(until_expiry, kind)
            headers = {"Authorization": f"Bearer {mint_token(SECRET, Scope('admin'), ttl_s=60)}"}
            for _ in range(3):  # the client leaves the live list after its snapshot
                async with client.stream("GET", paths["admin"], headers=headers) as response:
                    async for event in aiter_events(response):
                        assert event.name == "snapshot"
                        break
            await wait_for(lambda: _none(open_streams(gateway, headers)), timeout=10, what="the streams closed")
            assert gateway_garbage() == []
    finally:
        gc.enable()


async def _none(count: Awaitable[int]) -> bool:
    return await count == 0
