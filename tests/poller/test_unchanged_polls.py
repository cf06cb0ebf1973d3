"""A tail poll whose body is byte for byte the last one is neither decoded nor compared — and a tail whose
write failed is not taken as already written; sessions that start together do not take their whole lists together."""

from __future__ import annotations

from typing import Any

import psycopg_pool
import pytest
from redis.asyncio import Redis

from poller.archive import Archive
from poller.deps import TrackerDeps
from poller.job_board import JobBoard
from poller.metrics import Metrics
from poller.session_mirror import FULL_POLL_EVERY, SessionMirror
from poller.status_board import StatusBoard
from shared import commands
from shared.errors import Unavailable
from shared.ids import new_message_id
from shared.opencode.client import OpenCodeClient
from shared.store.lease import Lease
from shared.store.live import read_record
from shared.store.lua import Scripts
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def idle(opencode: OpenCodeClient, sid: str, count: int) -> None:
    async def done() -> bool:
        messages = await opencode.messages(sid)
        return (
            len(messages) == count
            and "completed" in messages[-1]["info"]["time"]
            and sid not in await opencode.status()
        )

    await wait_for(done, timeout=20, what=f"{count} messages, the run ended")


def mirror_deps(redis: Redis, opencode: OpenCodeClient, schema: str, metrics: Metrics) -> TrackerDeps:
    return TrackerDeps(
        redis=redis,
        scripts=Scripts(redis),
        opencode=opencode,
        archive=Archive(psycopg_pool.AsyncConnectionPool(schema, open=False)),  # not used by the mirror
        board=StatusBoard(opencode, 1.0),
        jobs=JobBoard(redis),
        poll_interval_s=0.5,
        retry_deadline_s=10.0,
        metrics=metrics,
    )


async def claimed_chat(redis: Redis, db: Any, opencode: OpenCodeClient) -> Lease:
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt=None)
    leases = await Scripts(redis).claim("replica-test", 60_000, 100)
    [lease] = [lease for lease in leases if lease.session_id == state["sessionId"]]
    return lease


async def test_the_same_tail_twice_is_not_decoded(opencode: OpenCodeClient, redis: Redis, db: Any) -> None:
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt=None)
    sid = state["sessionId"]
    await opencode.prompt_async(sid, message_id=new_message_id(), text="hello")
    await idle(opencode, sid, 2)
    first, digest = await opencode.messages_if_changed(sid, limit=4, digest=None)
    assert first == await opencode.messages(sid, limit=4)
    assert await opencode.messages_if_changed(sid, limit=4, digest=digest) == (None, digest)
    await opencode.prompt_async(sid, message_id=new_message_id(), text="again")
    await idle(opencode, sid, 4)
    changed, new_digest = await opencode.messages_if_changed(sid, limit=4, digest=digest)
    assert changed is not None and len(changed) == 4 and new_digest != digest


async def test_a_tail_whose_write_failed_is_written_by_the_next_identical_poll(
    opencode: OpenCodeClient, redis: Redis, db: Any, schema: str
) -> None:
    lease = await claimed_chat(redis, db, opencode)
    sid = lease.session_id
    metrics = Metrics()
    mirror = await SessionMirror.load(mirror_deps(redis, opencode, schema, metrics), lease, spread=0)  # tail polls
    await mirror.write_poll(*await mirror.fetch())  # the first poll: the whole (empty) list
    await opencode.prompt_async(sid, message_id=new_message_id(), text="hello")
    await idle(opencode, sid, 2)

    messages, tail = await mirror.fetch()  # a tail poll with the answer in it
    assert tail is not None and len(tail) == 2
    await redis.execute_command("REPLICAOF", "127.0.0.1", "1")  # Redis refuses writes (READONLY), as in a failover
    try:
        with pytest.raises(Unavailable, match="read-only"):
            await mirror.write_poll(messages, tail)
    finally:
        await redis.execute_command("REPLICAOF", "NO", "ONE")
    record = await read_record(redis, sid)
    assert record is not None and record.messages() == []  # nothing of the answer was written

    await mirror.write_poll(*await mirror.fetch())  # the same bytes again: compared and written this time
    record = await read_record(redis, sid)
    assert record is not None and record.messages() == await opencode.messages(sid)
    unchanged = {"server": "default"}
    assert (
        metrics.registry.get_sample_value("poller_polls_unchanged_total", unchanged) == 0
    )  # not one yet (the series exists from the start)

    writes = mirror.writer.writes
    await mirror.write_poll(*await mirror.fetch())  # now they are known: neither decoded nor written
    assert mirror.writer.writes == writes
    assert metrics.registry.get_sample_value("poller_polls_unchanged_total", unchanged) == 1


async def test_sessions_started_together_take_their_whole_lists_at_different_polls(
    opencode: OpenCodeClient, redis: Redis, db: Any, schema: str
) -> None:
    """The cadence is drift-free: whole-list polls that start in step stay in step, a burst every 20 polls."""
    lease = await claimed_chat(redis, db, opencode)
    deps = mirror_deps(redis, opencode, schema, Metrics())
    second_full_at = []
    for _ in range(12):  # twelve trackers of sessions claimed together (one session serves: each mirror polls alone)
        mirror = await SessionMirror.load(deps, lease)
        assert (await mirror.fetch())[1] is None  # the first poll takes the whole list
        polls = 0
        while (await mirror.fetch())[1] is not None:
            polls += 1
            assert polls < FULL_POLL_EVERY, "a whole list at least every FULL_POLL_EVERY polls"
        second_full_at.append(polls + 1)
    assert len(set(second_full_at)) > 1, second_full_at  # all twelve in step: 20^-11 with the spread
    for _ in range(FULL_POLL_EVERY - 1):  # after the spread, every FULL_POLL_EVERY polls as before
        assert (await mirror.fetch())[1] is not None
    assert (await mirror.fetch())[1] is None
