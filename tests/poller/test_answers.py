"""Answers: recorded in PostgreSQL, given to OpenCode once by the owner, and the run goes on to the end."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from psycopg.pq import TransactionStatus

from shared import answers, commands
from shared.errors import Conflict, InvalidInput, NotFound
from shared.ids import SessionId
from shared.store import requests
from shared.store.live import read_record
from tests.helpers import wait_for, waiting_entry

pytestmark = pytest.mark.anyio


async def sim_stats(simulator_url: str) -> Any:
    async with httpx.AsyncClient(base_url=simulator_url) as client:
        return (await client.get("/__sim/stats")).json()


async def archived(db: Any, sid: str) -> Any:
    cur = await db.execute("SELECT status FROM opencode_sessions WHERE id = %s", (sid,))
    row = await cur.fetchone()
    return row[0] if row and row[0] not in ("pending", "running") else None


async def start(redis, db, opencode, prompt: str) -> str:  # type: ignore[no-untyped-def]
    rules = ["bash=ask"] if "TOOL" in prompt else []
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt=prompt, permission=rules)
    return str(state["sessionId"])


async def test_reply_once_runs_the_tool_and_the_archive_keeps_the_answer(
    make_worker, redis, db, opencode, simulator_url
) -> None:
    await make_worker()
    sid = await start(redis, db, opencode, "TOOL run")
    entry = await waiting_entry(redis, sid)
    result = await answers.reply(redis, db, sid, entry["id"], "once", by="alice")
    assert result["answer"] == {"reply": "once"} and result["by"] == "alice"
    assert await wait_for(lambda: archived(db, sid), timeout=20) == "completed"
    messages = await opencode.messages(sid)
    assert messages[1]["parts"][1]["state"]["status"] == "completed"
    [row] = await requests.of_session(db, sid)
    assert (row.id, row.kind, row.answer, row.answered_by, row.outcome) == (
        entry["id"],
        "permission",
        {"reply": "once"},
        "alice",
        "answered",
    )
    assert row.answered_at is not None and row.delivered_at is not None and row.request["patterns"] == ["echo hello"]
    assert (await sim_stats(simulator_url))["replies"][entry["id"]] == 1
    with pytest.raises(Conflict, match="already answered by alice"):
        await answers.reply(redis, db, sid, entry["id"], "once")


async def test_reject_with_a_message_ends_the_tool_in_error_and_the_run_completes(
    make_worker, redis, db, opencode
) -> None:
    await make_worker()
    sid = await start(redis, db, opencode, "TOOL run")
    entry = await waiting_entry(redis, sid)
    await answers.reply(redis, db, sid, entry["id"], "reject", message="not here", by="bob")
    assert await wait_for(lambda: archived(db, sid), timeout=20) == "completed"
    state = (await opencode.messages(sid))[1]["parts"][1]["state"]
    assert state["status"] == "error" and state["error"].endswith("feedback: not here")


async def test_answer_a_question_with_a_label(make_worker, redis, db, opencode, simulator_url) -> None:
    await make_worker()
    sid = await start(redis, db, opencode, "QUESTION pick")
    entry = await waiting_entry(redis, sid)
    with pytest.raises(InvalidInput, match="'Green' is not an option"):
        await answers.answer(redis, db, sid, entry["id"], choices=[["Green"]])
    with pytest.raises(InvalidInput, match="one --choice per question"):
        await answers.answer(redis, db, sid, entry["id"], choices=[["Red"], ["Blue"]])
    with pytest.raises(InvalidInput, match="is a question"):
        await answers.reply(redis, db, sid, entry["id"], "once")
    assert await requests.fetch(db, entry["id"]) is None or (await requests.fetch(db, entry["id"])).answer is None
    await answers.answer(redis, db, sid, entry["id"], choices=[["Blue"]], by="carol")
    assert await wait_for(lambda: archived(db, sid), timeout=20) == "completed"
    final = (await opencode.messages(sid))[-1]["parts"][1]["text"]
    assert '="Blue"' in final
    assert (await sim_stats(simulator_url))["replies"][entry["id"]] == 1


async def test_unknown_and_mismatched_requests_change_nothing(make_worker, redis, db, opencode) -> None:
    await make_worker()
    sid = await start(redis, db, opencode, "TOOL run")
    entry = await waiting_entry(redis, sid)
    with pytest.raises(NotFound, match="no pending request"):
        await answers.reply(redis, db, sid, "per_0000000000000000000000000", "once")
    with pytest.raises(InvalidInput, match="is a permission request"):
        await answers.answer(redis, db, sid, entry["id"], choices=[["Red"]])
    with pytest.raises(InvalidInput, match="invalid reply"):
        await answers.reply(redis, db, sid, entry["id"], "sometimes")
    row = await requests.fetch(db, entry["id"])
    assert row is None or row.answer is None
    assert (await read_record(redis, SessionId(sid))).state.status == "waiting"  # type: ignore[union-attr]
    await answers.reply(redis, db, sid, entry["id"], "once")
    await wait_for(lambda: archived(db, sid), timeout=20)


async def test_a_request_nobody_answers_is_rejected_after_the_timeout(make_worker, redis, db, opencode) -> None:
    await make_worker(pending_request_timeout_s=0.3)
    sid = await start(redis, db, opencode, "TOOL run")
    assert await wait_for(lambda: archived(db, sid), timeout=20) == "completed"
    state = (await opencode.messages(sid))[1]["parts"][1]["state"]
    assert state["status"] == "error" and "PENDING_REQUEST_TIMEOUT_MS" in state["error"]
    [row] = await requests.of_session(db, sid)
    assert row.answered_by == "opencode-poller" and row.answer["reply"] == "reject"
    assert "PENDING_REQUEST_TIMEOUT_MS" in row.answer["message"] and row.outcome == "answered"


async def test_a_reply_on_a_connection_with_autocommit_off_is_committed_and_reaches_opencode(
    make_worker, redis, db, opencode, schema
) -> None:
    await make_worker()
    sid = await start(redis, db, opencode, "TOOL run")
    entry = await waiting_entry(redis, sid)
    async with await psycopg.AsyncConnection.connect(schema) as own:  # psycopg's default: autocommit off
        await answers.reply(redis, own, sid, entry["id"], "once", by="bob")
        assert own.info.transaction_status == TransactionStatus.IDLE  # nothing left open behind the caller
    [row] = await requests.of_session(db, sid)  # another connection sees it: committed
    assert (row.answer, row.answered_by) == ({"reply": "once"}, "bob")
    assert await wait_for(lambda: archived(db, sid), timeout=20) == "completed"


async def test_an_answer_recorded_before_redis_lost_the_job_still_reaches_opencode_once(
    make_worker, redis, db, opencode, simulator_url
) -> None:
    await make_worker(reconcile_interval_s=0.5)
    sid = await start(redis, db, opencode, "TOOL run")
    entry = await waiting_entry(redis, sid)
    # recorded in PostgreSQL, then Redis lost everything before the answer was handed to the owner
    assert await requests.record_answer(db, sid, entry, {"reply": "once"}, "carol", 1) is not None
    await redis.flushall()
    assert await wait_for(lambda: archived(db, sid), timeout=30) == "completed"
    assert (await sim_stats(simulator_url))["replies"][entry["id"]] == 1
    [row] = await requests.of_session(db, sid)
    assert (row.answered_by, row.outcome) == ("carol", "answered")


async def test_a_request_answered_in_opencode_itself_ends_gone_not_unanswered(make_worker, redis, db, opencode) -> None:
    """Someone answered in OpenCode's own UI: the run goes on, and the archive says the request went without ours."""
    await make_worker()
    sid = await start(redis, db, opencode, "TOOL run")
    entry = await waiting_entry(redis, sid)
    assert await opencode.reply_permission(entry["id"], "once") is True
    assert await wait_for(lambda: archived(db, sid), timeout=20) == "completed"
    [row] = await requests.of_session(db, sid)
    assert (row.id, row.answer, row.answered_by, row.delivered_at, row.outcome) == (
        entry["id"],
        None,
        None,
        None,
        "gone",
    )
    with pytest.raises(Conflict):
        await answers.reply(redis, db, sid, entry["id"], "once")


async def test_a_request_whose_run_was_cancelled_ends_gone(make_worker, redis, db, opencode) -> None:
    await make_worker()
    sid = await start(redis, db, opencode, "QUESTION pick")
    entry = await waiting_entry(redis, sid)
    assert await commands.cancel(redis, db, sid) == "requested"
    assert await wait_for(lambda: archived(db, sid), timeout=20) == "cancelled"
    [row] = await requests.of_session(db, sid)
    assert (row.id, row.answer, row.outcome) == (entry["id"], None, "gone")
