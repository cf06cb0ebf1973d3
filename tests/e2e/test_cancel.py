"""A cancel survives Redis losing its data: PostgreSQL records it, and the backstop re-queues the session cancelled."""

from __future__ import annotations

import signal
from typing import Any

import httpx
import pytest

from shared import commands
from shared.ids import SessionId
from shared.opencode.client import OpenCodeClient
from shared.store import archive, keys
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def sim_stats(simulator: str) -> Any:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{simulator}/__sim/stats")).json()


async def running_in_opencode(simulator: str, sid: SessionId) -> bool:
    """The prompt was delivered and OpenCode is busy answering it."""
    async with httpx.AsyncClient() as client:
        busy = (await client.get(f"{simulator}/session/status")).json()
    delivered = (await sim_stats(simulator))["prompt_async"]["by_session"].get(sid) == 1
    return delivered and sid in busy


async def test_a_cancel_before_redis_loses_its_data_still_ends_the_session_cancelled(
    redis, db, make_poller, simulator_process
):
    simulator = simulator_process(speed=0.5)  # a SLOW answer streams for several seconds
    poller = make_poller(simulator, name="cancel")
    async with OpenCodeClient(simulator) as opencode:
        state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="SLOW answer")
        sid = SessionId(state["sessionId"])
        await wait_for(lambda: running_in_opencode(simulator, sid), timeout=30, what="the SLOW run under way")

        poller.signal(signal.SIGSTOP)  # nobody acts on the cancel in Redis before Redis loses it
        assert await commands.cancel(redis, db, sid) == "requested"
        await redis.flushall()
        poller.signal(signal.SIGCONT)

        async def ended() -> archive.ArchiveRow | None:
            row = await archive.fetch(db, sid)
            return row if row is not None and not row.unfinished else None

        row = await wait_for(ended, timeout=60, what="the session archived")
        assert (row.status, row.error_message) == ("cancelled", None)
        assert row.messages == await opencode.messages(sid)
        assert (await sim_stats(simulator))["requests"].get(f"POST /session/{sid}/abort", 0) >= 1
        assert '"session_requeued_from_archive"' in poller.output()
        assert await redis.exists(keys.session(sid)) == 0  # archived: no live state left
