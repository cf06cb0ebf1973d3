"""A session's life under failure: a new owner that ends a session before its first poll, failures counted across
replicas whose clocks disagree."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import psycopg_pool
import pytest

from poller.archive import Archive
from poller.failures import FAILURE_WINDOW_MS
from poller.worker import Worker
from shared import commands
from shared.clock import now_ms
from shared.config import Settings
from shared.opencode.client import OpenCodeClient
from shared.store import archive, keys
from shared.store.connections import redis_client
from shared.store.live import read_record
from shared.store.lua import Scripts
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

TWO_HOURS_MS = 2 * FAILURE_WINDOW_MS


@asynccontextmanager
async def replica(settings: Settings, **overrides: Any) -> AsyncIterator[Worker]:
    """An in-process replica for the block; leaving it stops the replica as SIGTERM does (leases given back)."""
    worker_settings = dataclasses.replace(settings, **overrides)
    client = redis_client(worker_settings.redis_url)
    pool = psycopg_pool.AsyncConnectionPool(str(worker_settings.database_url), min_size=1, max_size=4, open=False)
    await pool.open(wait=False)
    oc = OpenCodeClient(worker_settings.opencode_url, timeout_s=2.0)
    try:
        async with anyio.create_task_group() as tg:
            worker = Worker(worker_settings, client, pool, oc)
            tg.start_soon(worker.run)
            yield worker
            tg.cancel_scope.cancel()
    finally:
        await oc.aclose()
        await pool.close()
        await client.aclose()


async def final_row(db: Any, sid: str) -> archive.ArchiveRow | None:
    row = await archive.fetch(db, sid)
    return row if row and not row.unfinished else None


async def mirrored_then_lost(
    settings: Settings, redis: Any, db: Any, opencode: Any, simulator_url: str
) -> tuple[str, list[Any]]:
    """A SLOW chat whose answer a replica mirrored before it stopped, then deleted from OpenCode while no replica
    holds it: its id, and the messages Redis holds of it."""
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="SLOW answer")
    sid = state["sessionId"]

    async def answering() -> bool:
        record = await read_record(redis, sid)
        return record is not None and any(m["info"]["role"] == "assistant" for m in record.messages())

    async with replica(settings, replica_id="first"):
        await wait_for(answering, timeout=20, what="the answer mirrored")
    record = await read_record(redis, sid)
    assert record is not None
    async with httpx.AsyncClient(base_url=simulator_url) as client:
        assert (await client.delete(f"/session/{sid}")).status_code == 200
    return sid, record.messages()


async def test_a_session_opencode_lost_before_its_new_owner_polled_it_is_archived_with_its_messages(
    settings, redis, db, opencode, simulator_url
):
    """Was: a new owner (a takeover, a restart) whose first poll found the session gone from OpenCode (or OpenCode
    down past the deadline) archived the list it had polled so far, none: every message mirrored was lost."""
    sid, mirrored = await mirrored_then_lost(settings, redis, db, opencode, simulator_url)
    async with replica(settings, replica_id="second"):
        row = await wait_for(lambda: final_row(db, sid), timeout=20, what="the archive")
    assert row.status == "error" and "OpenCode no longer has this session" in (row.error_message or "")
    assert row.messages == mirrored
    assert not await redis.exists(keys.session(sid), keys.job(sid))


async def test_a_replica_whose_clock_is_ahead_still_gives_up_on_failures_counted_elsewhere(
    make_worker, redis, db, opencode, monkeypatch
):
    """Was: the replica compared its own clock with when another replica counted the last failure, took it for
    long past, and ran again a session already at the bound."""
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO hello")
    sid = state["sessionId"]
    redis_now = int((await redis.time())[0]) * 1000
    await redis.hset(keys.job(sid), mapping={"failures": 3, "lastFailure": "KeyError: x", "lastFailureAt": redis_now})
    ahead = now_ms() + TWO_HOURS_MS
    monkeypatch.setattr("poller.failures.now_ms", lambda: ahead, raising=False)  # whatever clock it might read
    await make_worker(session_max_failures=3)
    row = await wait_for(lambda: final_row(db, sid), timeout=20, what="the archive")
    assert (row.status, row.error_message) == ("error", "gave up after 3 failed attempts: KeyError: x")


async def test_a_cancelled_session_opencode_lost_ends_cancelled(settings, redis, db, opencode, simulator_url):
    """A person cancelled the session while no replica held it, and OpenCode lost it meanwhile. Was: `error`
    ("OpenCode no longer has this session"), the cancel forgotten; a session given up on with a cancel asked
    already ended `cancelled`."""
    sid, _ = await mirrored_then_lost(settings, redis, db, opencode, simulator_url)
    assert await commands.cancel(redis, db, sid) == "requested"
    async with replica(settings, replica_id="second"):
        row = await wait_for(lambda: final_row(db, sid), timeout=20, what="the archive")
    assert (row.status, row.error_message) == ("cancelled", None)
    assert any(m["info"]["role"] == "assistant" for m in row.messages)  # what was mirrored is kept


@pytest.mark.parametrize("comes", ["before the archive write", "after the archive write"])
async def test_a_follow_up_that_came_while_archiving_survives_redis_losing_its_data_at_once(
    make_worker, redis, db, opencode, monkeypatch, comes
):
    """A prompt that comes while the owner archives makes the fenced finish answer -2: the session goes on, but the
    row says it ended. Was: it said so until the owner's next tick, which found the job gone when Redis had lost
    its data meanwhile; the backstop passes over an ended row, so the follow-up, acknowledged to whoever sent it,
    never ran (and one sent after the archive write was in Redis alone). Now `send` records the prompt in an ended
    row as running again, and the owner records its claim again as soon as the finish says -2."""
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="ECHO first")
    sid = state["sessionId"]
    record_final, finish = Archive.record_final, Scripts.finish
    follow_up: list[str] = []

    async def archived_around_a_prompt(self: Archive, session: Any, *args: Any, **kwargs: Any) -> bool:
        if session.session_id == sid and not follow_up and comes.startswith("before"):
            follow_up.append(await commands.send(redis, db, sid, "ECHO the follow-up"))
        recorded = await record_final(self, session, *args, **kwargs)
        if session.session_id == sid and not follow_up:
            follow_up.append(await commands.send(redis, db, sid, "ECHO the follow-up"))
        return recorded

    async def finish_then_redis_loses_its_data(self: Scripts, lease: Any, *args: Any, **kwargs: Any) -> int:
        seq = await finish(self, lease, *args, **kwargs)
        if seq == -2:
            await redis.flushdb()
        return seq

    monkeypatch.setattr(Archive, "record_final", archived_around_a_prompt)
    monkeypatch.setattr(Scripts, "finish", finish_then_redis_loses_its_data)
    await make_worker()

    async def follow_up_answered() -> archive.ArchiveRow | None:
        row = await final_row(db, sid)
        ids = [m["info"]["id"] for m in row.messages] if row else []
        return row if follow_up and follow_up[0] in ids[:-1] else None

    row = await wait_for(follow_up_answered, timeout=30, what="the follow-up run and archived")
    assert row.status == "completed" and row.messages[-1]["info"]["role"] == "assistant"
