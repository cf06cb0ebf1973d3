"""shared.usage_report against real Redis and PostgreSQL: a total never misses a session that is archived while
it is being read."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from shared import commands, usage_report
from shared.models import dumps
from shared.store import keys
from shared.store.usage_sums import UsageFilter
from shared.usage import Usage

pytestmark = pytest.mark.anyio

FINAL = Usage(input=7, output=3, cost=0.25, steps=1)


async def _archived_between_the_reads(monkeypatch, redis, db, session_id: str) -> None:
    """The owner archives the session after PostgreSQL was read and before Redis is: its row then holds its usage,
    and its live state is gone."""
    read_live = usage_report._live

    async def archiving_first(redis_: Any, rows: Any) -> Any:
        await db.execute(
            "UPDATE opencode_sessions SET status = 'completed', tokens_input = %s, tokens_output = %s, cost = %s,"
            " steps = %s WHERE id = %s",
            (FINAL.input, FINAL.output, FINAL.cost, FINAL.steps, session_id),
        )
        await redis.delete(keys.session(session_id))
        return await read_live(redis_, rows)

    monkeypatch.setattr(usage_report, "_live", archiving_first)


async def test_a_total_counts_a_session_archived_between_its_reads_with_its_archived_usage(
    monkeypatch, redis, db, opencode
):
    ended = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-R")
    await db.execute(
        "UPDATE opencode_sessions SET status = 'completed', tokens_input = 1, steps = 1 WHERE id = %s",
        (ended["sessionId"],),
    )
    running = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-R")
    await _archived_between_the_reads(monkeypatch, redis, db, running["sessionId"])

    total = await usage_report.usage_totals(redis, db, UsageFilter(ticket_id="T-R"))

    assert total == {"sessions": 2, "usage": Usage.total([FINAL, Usage(input=1, steps=1)]).to_json()}


async def test_a_tickets_usage_shows_a_session_archived_between_its_reads_as_archived(monkeypatch, redis, db, opencode):
    state = await commands.enqueue(redis, db, opencode, session_type="ask", ticket_id="T-S")
    await _archived_between_the_reads(monkeypatch, redis, db, state["sessionId"])

    answer = await usage_report.ticket_usage(redis, db, "T-S")

    assert answer["total"] == FINAL.to_json()
    assert [(s["status"], s["live"], s["usage"]) for s in answer["sessions"]] == [("completed", False, FINAL.to_json())]


async def test_a_total_sums_ended_sessions_and_counts_running_ones_live(redis, db, opencode):
    """The one statement's two halves: the ended sum, and each unfinished row with its live usage."""
    ids = [(await commands.enqueue(redis, db, opencode, session_type="chat"))["sessionId"] for _ in range(3)]
    for sid, tokens in zip(ids[:2], (10, 20), strict=True):
        await db.execute(
            "UPDATE opencode_sessions SET status = 'error', tokens_output = %s, steps = 1 WHERE id = %s", (tokens, sid)
        )
    live = Usage(input=5, steps=2)
    await redis.hset(keys.session(ids[2]), "usage", dumps(live.to_json()))  # as the poller writes it

    total = await usage_report.usage_totals(redis, db, UsageFilter(session_type="chat"))

    assert total == {"sessions": 3, "usage": Usage.total([Usage(output=30, steps=2), live]).to_json()}
    assert await usage_report.usage_totals(redis, db, UsageFilter(session_type="admin")) == {
        "sessions": 0,
        "usage": Usage().to_json(),
    }


async def test_usage_reads_leave_no_transaction_open(redis, db, opencode, schema):
    """README: reads leave no transaction open, whatever the connection's mode. Was: one left open on a connection
    with autocommit off (psycopg's default), holding its snapshot until the caller committed."""
    await commands.enqueue(redis, db, opencode, session_type="ask", ticket_id="T-TX")
    async with await psycopg.AsyncConnection.connect(schema) as conn:
        assert (await usage_report.ticket_usage(redis, conn, "T-TX"))["total"] == Usage().to_json()
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert (await usage_report.usage_totals(redis, conn, UsageFilter(ticket_id="T-TX")))["sessions"] == 1
        assert conn.info.transaction_status == TransactionStatus.IDLE
