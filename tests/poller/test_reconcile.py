"""The PostgreSQL backstop re-queues what Redis lost, and never a session that ended while it looked."""

from __future__ import annotations

import dataclasses

import psycopg_pool
import pytest

from poller import reconcile
from shared.ids import SessionId
from shared.store import archive, keys

pytestmark = pytest.mark.anyio

SID = SessionId("ses_backstop0000000000000001")


async def running_row(db) -> archive.ArchiveRow:
    await db.execute(
        "INSERT INTO opencode_sessions (id, ticket_id, session_type, status, messages, metadata, started_at)"
        " VALUES (%s, 'T-1', 'ask', 'running', '[]'::jsonb,"
        """ '{"sessionLayer": {"prompts": [{"messageID": "msg_a", "text": "hi"}], "epoch": 3}}'::jsonb, now())""",
        (SID,),
    )
    row = await archive.fetch(db, SID)
    assert row is not None
    return row


@pytest.fixture
async def pool(schema):
    async with psycopg_pool.AsyncConnectionPool(schema, min_size=1, max_size=2, open=False) as pool:
        yield pool


async def test_a_running_row_without_live_state_is_queued_again(redis, db, pool):
    await running_row(db)
    assert await reconcile.reconcile_once(redis, pool) == 1
    assert await redis.exists(keys.job(SID))
    assert await reconcile.reconcile_once(redis, pool) == 0, "a live job is left alone"


async def test_a_session_archived_between_the_two_reads_is_not_run_again(redis, db, pool, monkeypatch):
    """The owner commits the archive, then deletes the job: the backstop's first read can predate both."""
    stale = await running_row(db)
    await db.execute("UPDATE opencode_sessions SET status = 'completed', completed_at = now() WHERE id = %s", (SID,))

    async def first_read(conn, limit):
        return [dataclasses.replace(stale)]  # read before the archive committed; the job is gone by now

    monkeypatch.setattr(reconcile.archive, "unfinished", first_read)
    assert await reconcile.reconcile_once(redis, pool) == 0
    assert not await redis.exists(keys.job(SID))
