"""A replica holding waiting sessions is killed with `kill -9`: the new owner still shows their requests, and an
answer given before or during the takeover reaches OpenCode exactly once."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from redis.asyncio import Redis

from shared import answers, commands
from shared.ids import SessionId
from shared.opencode.client import OpenCodeClient
from shared.store import keys
from shared.store.live import read_record
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def waiting(redis: Redis, sid: str) -> Any:
    record = await read_record(redis, SessionId(sid))
    return record.state.pending if record is not None and record.state.status == "waiting" else None


async def owner(redis: Redis, sid: str) -> str | None:
    token = await redis.get(keys.lease(sid))
    return token.decode().split(":", 1)[1] if token else None


async def all_archived(schema: str, sids: list[str]) -> bool:
    async with await psycopg.AsyncConnection.connect(schema, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM opencode_sessions WHERE id = ANY(%s) AND status = 'completed'", (sids,)
        )
        row = await cur.fetchone()
        return bool(row and row[0] == len(sids))


async def test_kill_9_while_waiting(redis, db, schema, make_poller, simulator_process) -> None:
    simulator = simulator_process(speed=1)
    first = make_poller(simulator, name="held")
    async with OpenCodeClient(simulator) as opencode:
        sids = [
            (await commands.enqueue(redis, db, opencode, session_type="ask", prompt="TOOL x", permission=["bash=ask"]))[
                "sessionId"
            ]
            for _ in range(3)
        ]
        before, during, after = sids
        entries = {sid: (await wait_for(lambda s=sid: waiting(redis, s), timeout=30))[0] for sid in sids}
        assert {await owner(redis, sid) for sid in sids} == {"held-0"}

        await answers.reply(redis, db, before, entries[before]["id"], "once", by="before")
        first.kill()  # kill -9
        await answers.reply(redis, db, during, entries[during]["id"], "once", by="during")
        make_poller(simulator, name="next")

        async def shown_by_new_owner() -> Any:
            return await owner(redis, after) == "next-1" and await waiting(redis, after) == [entries[after]]

        await wait_for(shown_by_new_owner, timeout=30, what="the new owner showing the request")
        await answers.reply(redis, db, after, entries[after]["id"], "once", by="after")
        await wait_for(lambda: all_archived(schema, sids), timeout=60, what="every session completed")

    async with httpx.AsyncClient(base_url=simulator) as client:
        replies = (await client.get("/__sim/stats")).json()["replies"]
    assert {sid: replies.get(entries[sid]["id"]) for sid in sids} == {sid: 1 for sid in sids}
