"""Failure paths, one replica in-process: OpenCode slow, failing or gone; PostgreSQL down at archive; Redis lost."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from poller.failures import describe, is_outage
from shared import commands
from shared.errors import LeaseLost, Unavailable
from shared.store import keys
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def fault(simulator_url: str, **body) -> None:
    async with httpx.AsyncClient(base_url=simulator_url) as client:
        (await client.post("/__sim/faults", json=body)).raise_for_status()


async def final_row(database_url: str, sid: str):
    """A fresh connection each time, so a PostgreSQL restart does not break the check itself."""
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True, connect_timeout=2) as conn:
            cur = await conn.execute(
                "SELECT status, messages, error_message FROM opencode_sessions WHERE id = %s", (sid,)
            )
            row = await cur.fetchone()
    except psycopg.OperationalError:
        return None
    return row if row and row[0] not in ("pending", "running") else None


@pytest.mark.parametrize(
    "kind",
    [
        {"kind": "error500", "count": 6},
        {"kind": "malformed", "count": 6},
        {"kind": "reset", "count": 6},
        {"kind": "slow", "ms": 400, "count": 6},
    ],
    ids=lambda k: k["kind"],
)
async def test_transient_opencode_failures_are_retried_and_lose_nothing(
    kind, make_worker, redis, db, opencode, simulator_url, schema
):
    await make_worker()
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="TOOL please")
    sid = state["sessionId"]
    await fault(simulator_url, path=f"/session/{sid}/message", method="GET", **kind)
    status, messages, error = await wait_for(lambda: final_row(schema, sid), timeout=30)
    assert (status, error) == ("completed", None)
    assert messages == await opencode.messages(sid)


async def test_opencode_gone_past_the_deadline_ends_the_session_in_error(
    make_worker, redis, db, opencode, simulator_url, schema
):
    await make_worker(opencode_retry_deadline_s=1.0)
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="SLOW answer")
    sid = state["sessionId"]
    await wait_for(lambda: redis.hlen(keys.session_messages(sid)), timeout=20, what="first messages mirrored")
    await fault(simulator_url, path=f"/session/{sid}/message", kind="error500")  # until cleared: never recovers
    other = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO unaffected")
    status, messages, error = await wait_for(lambda: final_row(schema, sid), timeout=30)
    assert status == "error"
    assert "OpenCode failed" in error and "500" in error
    assert messages and messages[0]["info"]["role"] == "user"  # what was mirrored is archived, not dropped
    # one failing session never disturbs the others
    assert (await wait_for(lambda: final_row(schema, other["sessionId"]), timeout=30))[0] == "completed"


async def test_postgres_down_at_archive_time_loses_nothing(make_worker, redis, db, opencode, schema, embedded_postgres):
    await make_worker()
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="SLOW answer")
    sid = state["sessionId"]
    await wait_for(lambda: redis.hlen(keys.session_messages(sid)), timeout=20, what="the session running")
    await db.close()
    embedded_postgres.stop()

    async def finished_in_opencode():
        messages = await opencode.messages(sid)
        return messages and messages[-1]["info"].get("finish") == "stop" and "completed" in messages[-1]["info"]["time"]

    await wait_for(finished_in_opencode, timeout=30)
    final_parts = sum(len(m["parts"]) for m in await opencode.messages(sid))

    async def mirrored_whole():
        return await redis.hlen(keys.session_parts(sid)) == final_parts

    # the run is over and PostgreSQL is down: the live state stays in Redis, whole
    await wait_for(mirrored_whole, timeout=10)
    assert await redis.exists(keys.session(sid), keys.job(sid)) == 2
    embedded_postgres.start()
    status, messages, _ = await wait_for(lambda: final_row(schema, sid), timeout=30)
    assert status == "completed"
    assert messages == await opencode.messages(sid)
    assert not await redis.exists(keys.session(sid))


async def test_redis_restarted_without_its_data_every_session_still_archives(
    make_worker, redis, db, opencode, schema, embedded_redis
):
    await make_worker()
    states = [
        await commands.enqueue(redis, db, opencode, session_type="ask", prompt=prompt)
        for prompt in ("SLOW one", "TOOL two", "SLOW three")
    ]
    await wait_for(lambda: redis.hlen(keys.session_messages(states[0]["sessionId"])), timeout=20)
    embedded_redis.restart()  # no persistence: every key is gone, the pollers' connections drop
    for state in states:
        status, messages, _ = await wait_for(lambda s=state: final_row(schema, s["sessionId"]), timeout=40)
        assert status == "completed"
        assert messages == await opencode.messages(state["sessionId"])


def test_an_outage_is_not_a_failure_of_the_session_and_the_cause_is_one_line():
    assert is_outage(ExceptionGroup("g", [Unavailable("Redis is unreachable"), LeaseLost("gone")]))
    assert not is_outage(ExceptionGroup("g", [Unavailable("x"), KeyError("id")]))
    group = ExceptionGroup("g", [ValueError("bad\nsecond line"), ExceptionGroup("h", [KeyError("id")])])
    assert describe(group) == "ValueError: bad; KeyError: 'id'"
    assert len(describe(ValueError("x" * 10_000))) == 500
