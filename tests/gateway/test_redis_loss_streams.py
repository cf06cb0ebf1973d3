"""Streams open while Redis loses its data without dropping the gateway's connection (FLUSHALL, a failover that
keeps the address): no event says so, and a stream must still end with the session as the stores hold it."""

from __future__ import annotations

import json

import anyio
import httpx
import psycopg_pool
import pytest

from poller.archive import Archive
from shared import commands
from shared.cli.stream import SessionView, aiter_events
from shared.ids import SessionId
from shared.models import dumps
from shared.store import keys
from shared.store.live import read_record
from shared.store.lua import Scripts, StateChange

pytestmark = pytest.mark.anyio
DEADLINE_S = 30.0
PING_S = 0.3
OTHER = "ses_0000000000000000000000other"  # a session of another replica, changing all along


@pytest.fixture
async def pool(schema):
    async with psycopg_pool.AsyncConnectionPool(schema, min_size=1, max_size=2, open=False) as pool:
        yield pool


MESSAGE = {
    "info": {"id": "msg_0000000000000000000000000a", "sessionID": "x", "role": "assistant"},
    "parts": [{"id": "prt_a", "messageID": "msg_0000000000000000000000000a", "type": "text", "text": "done"}],
}


async def running(redis, db, opencode):
    """A session its owner has written once (`running`, seq 2), and the owner's lease."""
    sid = SessionId((await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO x"))["sessionId"])
    scripts = Scripts(redis)
    [lease] = await scripts.claim("replica-a", 60_000, 10)
    part = MESSAGE["parts"][0]
    change = StateChange(
        fields={"status": "running"},
        messages={MESSAGE["info"]["id"]: json.dumps(MESSAGE["info"])},
        parts={f"{part['messageID']}/{part['id']}": json.dumps(part)},
        removed_messages=[],
        removed_parts=[],
        event_state='{"status":"running"}',
    )
    assert await scripts.apply(lease, change) == 2
    return sid, lease


async def follow_until(client, sid, view: SessionView, what) -> None:
    """Read the stream into `view` until `what(event)`; the deadline fails the test, it is no timing."""
    async with client.stream("GET", f"/sessions/{sid}/stream") as response:
        with anyio.fail_after(DEADLINE_S):
            async for event in aiter_events(response):
                view.apply(event)
                if event.name == "snapshot" and view.state["live"] and view.state["seq"] == 2:
                    await what.started()
                if what.done(event, view):
                    return


class ArchivedThenLost:
    """The owner commits the archive, and Redis loses everything before its finish.lua runs: `complete` is never
    published, and nothing goes to the backstop (the row is final)."""

    def __init__(self, redis, pool, sid, lease) -> None:
        self.redis, self.pool, self.sid, self.lease = redis, pool, sid, lease

    async def started(self) -> None:
        record = await read_record(self.redis, self.sid)
        assert record is not None
        archive = Archive(self.pool)
        final = {"status": "completed", "messages": [MESSAGE], "error": None, "seq": record.state.seq + 1}
        assert await archive.record_final(record.state, self.lease.epoch, **final)
        await self.redis.flushall()

    def done(self, event, view: SessionView) -> bool:
        return event.name == "complete"


async def test_a_session_archived_just_before_the_loss_completes_for_its_followers(
    make_gateway, redis, db, opencode, pool
):
    """Was: the follower kept the live `running` session and pinged on until its token ran out."""
    gateway = await make_gateway(ping_interval_s=PING_S)
    sid, lease = await running(redis, db, opencode)
    view = SessionView()
    async with httpx.AsyncClient(base_url=gateway, timeout=DEADLINE_S) as client:
        await follow_until(client, sid, view, ArchivedThenLost(redis, pool, sid, lease))
        archived = (await client.get(f"/sessions/{sid}")).json()
    assert view.completed and view.state == archived
    assert archived["status"] == "completed" and archived["live"] is False


class LostAndNotQueued:
    """Redis loses a running session whose row the backstop has not queued again (yet: its pass comes every
    interval; or never: a row it passes over). The follower is told the session is no longer live."""

    def __init__(self, redis) -> None:
        self.redis = redis

    async def started(self) -> None:
        await self.redis.flushall()

    def done(self, event, view: SessionView) -> bool:
        return event.name == "snapshot" and view.state["live"] is False


async def test_a_running_session_lost_shows_its_followers_the_archive_while_it_waits_for_the_backstop(
    make_gateway, redis, db, opencode
):
    gateway = await make_gateway(ping_interval_s=PING_S)
    sid, _ = await running(redis, db, opencode)
    view = SessionView()
    async with httpx.AsyncClient(base_url=gateway, timeout=DEADLINE_S) as client:
        await follow_until(client, sid, view, LostAndNotQueued(redis))
        now = (await client.get(f"/sessions/{sid}")).json()
    assert view.state == now and now["status"] == "pending"  # the row as it is: no claim was recorded


@pytest.mark.parametrize("busy", [False, True], ids=["quiet", "busy"])
async def test_the_live_list_drops_a_session_archived_just_before_the_loss(
    make_gateway, redis, db, opencode, pool, busy
):
    """Was: no `ended` ever came for it (finish.lua had nothing left to end), and the list showed it for as long as
    the stream lasted; and a list kept busy by other sessions' events, never quiet for a ping interval, never
    checked at all."""
    gateway = await make_gateway(ping_interval_s=PING_S)
    sid, lease = await running(redis, db, opencode)
    lost = ArchivedThenLost(redis, pool, sid, lease)
    shown: list[list[str]] = []

    async def other_sessions_change() -> None:
        while True:
            await redis.publish(keys.LIVE_UPDATES, dumps({"type": "status", "sessionId": OTHER, "status": "running"}))
            await anyio.sleep(PING_S / 5)

    async with (
        httpx.AsyncClient(base_url=gateway, timeout=DEADLINE_S) as client,
        client.stream("GET", "/sessions/live/stream") as response,
        anyio.create_task_group() as tg,
    ):
        with anyio.fail_after(DEADLINE_S):
            async for event in aiter_events(response):
                if event.name == "snapshot":
                    shown.append([s["sessionId"] for s in event.data["sessions"]])
                    if len(shown) == 1:
                        await lost.started()
                        if busy:
                            tg.start_soon(other_sessions_change)
                    else:
                        break
                elif event.name == "ended":
                    shown.append([])
                    break
        tg.cancel_scope.cancel()
    assert shown == [[sid], []]
