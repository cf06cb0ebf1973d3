"""A fault that repeats for one session ends that session alone: content PostgreSQL refuses, a step that raises."""

from __future__ import annotations

import json

import httpx
import pytest

from poller.failures import FAILURE_WINDOW_MS
from shared import commands
from shared.clock import now_ms
from shared.config import ServerConfig
from shared.opencode.servers import OpenCodeServers
from shared.sessions import get_session
from shared.store import archive, keys
from shared.store.lua import Scripts
from tests.helpers import enqueue_on_retired_server, wait_for

pytestmark = pytest.mark.anyio

NUL_TEXT = "ECHO before\x00after"


async def final_row(db, sid):
    """Read the way every reader of ours does (shared.store.archive), so escaped characters come back."""
    row = await archive.fetch(db, sid)
    return (row.status, row.messages, row.error_message) if row and not row.unfinished else None


def texts(messages) -> list[str]:
    return [p["text"] for m in messages for p in m["parts"] if p["type"] == "text"]


async def test_a_nul_prompt_sent_to_a_live_session_is_archived_exactly(make_worker, redis, db, opencode):
    """Was: the claim record and the archive failed with UntranslatableCharacter, the tracker crashed and was
    claimed again, several times a second, for ever."""
    await make_worker()
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="SLOW answer")
    sid = state["sessionId"]
    await wait_for(lambda: redis.hlen(keys.session_messages(sid)), timeout=20, what="the session running")
    await commands.send(redis, db, sid, NUL_TEXT)
    other = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO unaffected")
    status, messages, error = await wait_for(lambda: final_row(db, sid), timeout=30, what="the archive")
    assert (status, error) == ("completed", None)
    assert NUL_TEXT in texts(messages) and f"ECHO: {NUL_TEXT}" in texts(messages)
    assert messages == await opencode.messages(sid)  # as OpenCode returned it, U+0000 included
    assert (await get_session(redis, db, sid))["messages"] == messages
    cur = await db.execute("SELECT messages::text FROM opencode_sessions WHERE id = %s", (sid,))
    assert "ECHO before\uffff0000after" in (await cur.fetchone())[0]  # the stored form README documents
    assert (await wait_for(lambda: final_row(db, other["sessionId"]), timeout=30))[0] == "completed"


@pytest.mark.parametrize("odd", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])
async def test_a_prompt_postgresql_or_utf8_refuses_is_stored_and_answered(
    odd, make_worker, make_gateway, redis, db, opencode
):
    """A NUL (PostgreSQL refuses it) or a lone surrogate (no UTF-8 form: Redis could not take it, nor a JSON
    answer written raw) round-trips: OpenCode, Redis, PostgreSQL and the gateway."""
    await make_worker()
    gateway = await make_gateway()
    prompt = f"ECHO before{odd}after"
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt=prompt, metadata={"k": f"v{odd}"})
    status, messages, _ = await wait_for(lambda: final_row(db, state["sessionId"]), timeout=30, what="the archive")
    assert status == "completed"
    assert texts(messages) == [prompt, f"ECHO: {prompt}"]
    session = await get_session(redis, db, state["sessionId"])
    assert session["metadata"] == {"k": f"v{odd}"}
    async with httpx.AsyncClient(base_url=gateway) as client:
        answer = await client.get(f"/sessions/{state['sessionId']}")
    assert answer.status_code == 200
    assert json.loads(answer.content) == session  # the standard JSON reader gets every character back


async def poisoned(redis, db, opencode) -> str:
    """A running session whose job gets a prompt entry that is not JSON (a backend writing the wire format
    wrongly): reading the job raises for this session on every claim, on every replica."""
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="SLOW answer")
    sid = state["sessionId"]
    await wait_for(lambda: redis.hlen(keys.session_messages(sid)), timeout=20, what="the session running")
    assert await Scripts(redis).send(sid, "{not json")
    return sid


async def test_a_step_that_keeps_failing_ends_its_session_in_error_after_the_bounded_attempts(
    make_worker, redis, db, opencode
):
    worker = await make_worker(session_max_failures=3)
    sid = await poisoned(redis, db, opencode)
    other = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="TOOL unaffected")
    status, messages, error = await wait_for(lambda: final_row(db, sid), timeout=30, what="the archive")
    assert status == "error"
    assert error.startswith("gave up after 3 failed attempts: JSONDecodeError: ")
    assert messages and messages[0]["info"]["role"] == "user"  # what was mirrored is archived, not dropped
    assert (await wait_for(lambda: final_row(db, other["sessionId"]), timeout=30))[0] == "completed"

    async def let_go() -> bool:  # the live state is cleaned just after the archive commits
        return not worker.held and not await redis.exists(keys.session(sid), keys.job(sid))

    await wait_for(let_go, timeout=10, what="the live state cleaned and the lease given back")


async def test_cancel_ends_a_session_whose_step_keeps_failing(make_worker, redis, db, opencode):
    await make_worker(session_max_failures=1000)
    sid = await poisoned(redis, db, opencode)
    await wait_for(lambda: redis.hget(keys.job(sid), "failures"), timeout=20, what="a failed attempt")
    assert await commands.cancel(redis, db, sid) == "requested"
    status, _, error = await wait_for(lambda: final_row(db, sid), timeout=30, what="the archive")
    assert status == "cancelled"
    assert "JSONDecodeError" in error


async def test_failures_long_past_do_not_count_against_a_session(make_worker, redis, db, opencode):
    """Four failures two hours ago and a cancel now: the cancel ends the session as asked, not a give-up."""
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="SLOW answer")
    sid = state["sessionId"]
    long_ago = now_ms() - 2 * FAILURE_WINDOW_MS
    await redis.hset(
        keys.job(sid), mapping={"failures": 4, "lastFailure": "KeyError: 'old'", "lastFailureAt": long_ago}
    )
    assert await commands.cancel(redis, db, sid) == "requested"
    await make_worker(session_max_failures=5)
    status, _, error = await wait_for(lambda: final_row(db, sid), timeout=30, what="the archive")
    assert status == "cancelled"
    assert "gave up" not in (error or "")


async def test_an_archive_postgresql_keeps_refusing_ends_the_session_with_the_rows_own_messages(
    make_worker, redis, db, opencode
):
    """The archive itself is the failing step: after the bounded attempts the row is ended without the new
    messages, and its error says why; the live state is cleaned all the same."""
    await make_worker(session_max_failures=2)
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="SLOW answer")
    sid = state["sessionId"]
    other = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="TOOL unaffected")
    # this session's row may hold no messages: its final archive is refused, every time, by PostgreSQL alone
    check = f"CHECK (id <> '{sid}' OR jsonb_array_length(coalesce(messages, '[]')) = 0)"
    await db.execute(f"ALTER TABLE opencode_sessions ADD CONSTRAINT refuse_one_archive {check}")
    try:
        status, messages, error = await wait_for(lambda: final_row(db, sid), timeout=40, what="the archive")
    finally:
        await db.execute("ALTER TABLE opencode_sessions DROP CONSTRAINT refuse_one_archive")
    assert (status, messages) == ("error", [])
    assert error.startswith("gave up after 2 failed attempts: CheckViolation: ")
    assert "; the messages could not be archived: CheckViolation: " in error
    assert (await wait_for(lambda: final_row(db, other["sessionId"]), timeout=30))[0] == "completed"
    await wait_for(lambda: _gone(redis, sid), timeout=10, what="the live state cleaned")


async def _gone(redis, sid) -> bool:
    return not await redis.exists(keys.session(sid), keys.job(sid))


async def test_a_session_on_a_server_no_longer_configured_ends_in_error(make_worker, redis, db, simulator_url):
    """Was: the replica released it and claimed it again, for ever (`place_unknown`)."""
    servers = OpenCodeServers((ServerConfig("default", simulator_url), ServerConfig("retired", simulator_url)))
    try:
        state = await commands.enqueue(redis, db, servers, session_type="ask", prompt="ECHO x", server="retired")
        other = await commands.enqueue(redis, db, servers, session_type="ask", prompt="ECHO unaffected")
    finally:
        await servers.aclose()
    await make_worker(session_max_failures=2)  # it knows only the default server
    status, _, error = await wait_for(lambda: final_row(db, state["sessionId"]), timeout=30, what="the archive")
    assert status == "error" and "gave up after 2 failed attempts" in error and "'retired'" in error
    assert (await wait_for(lambda: final_row(db, other["sessionId"]), timeout=30))[0] == "completed"


async def test_a_session_on_a_server_no_longer_configured_is_not_aborted_on_another(
    make_worker, redis, db, simulator_process
):
    """Was: giving it up sent its abort through the default server's client, with that server's credentials, to a
    server that never had the session."""
    default, retired = simulator_process(speed=4.0), simulator_process(speed=4.0)
    sid = await enqueue_on_retired_server(redis, db, default, retired)
    await make_worker(opencode_url=default, session_max_failures=2)  # it knows only the default server
    assert (await wait_for(lambda: final_row(db, sid), timeout=30, what="the archive"))[0] == "error"
    async with httpx.AsyncClient(base_url=default) as client:
        asked = (await client.get("/__sim/stats")).json()["requests"]
    assert [request for request in asked if sid in request] == []


async def test_a_session_whose_list_outgrows_the_bound_ends_alone_naming_it(make_worker, redis, db, opencode):
    """A list past OPENCODE_MAX_RESPONSE_BYTES is not read (nor the `/event` record carrying the prompt): its session
    ends in error naming the variable, after OPENCODE_RETRY_DEADLINE_MS as for any failing call, while the replica
    serves the others. Without the bound such a list was read whole, whatever its size: one session could take the
    memory of the replica holding it, then of each replica that claimed it next."""
    await make_worker(opencode_max_response_bytes=500_000, opencode_retry_deadline_s=1.0)
    prompt = "ECHO " + "x" * 600_000  # the list is small until OpenCode has it
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt=prompt)
    other = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO unaffected")
    status, _, error = await wait_for(lambda: final_row(db, state["sessionId"]), timeout=30)
    assert status == "error"
    assert "with more than 500000 bytes (OPENCODE_MAX_RESPONSE_BYTES)" in error
    assert (await wait_for(lambda: final_row(db, other["sessionId"]), timeout=30))[0] == "completed"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metadata", "{bad"),
        ("startedAt", "2024-01-01T00:00:00Z"),
        ("currentToolCalls", "{}"),
        ("metadata", "[1]"),
        ("usage", "{bad"),
        ("pending", "{}"),
        ("pending", "nope"),
    ],
)
async def test_a_pending_state_field_another_backend_wrote_wrongly_reads_as_unset(
    make_worker, redis, db, opencode, field, value
):
    """The wire format has other backends write the pending state: a field of it that does not read (metadata
    that is no JSON object, a start time that is no integer) is taken as unset, and the session runs. Was: every
    reader raised (the gateway, the tracker), and the session's end, which reads it too, failed in turn: it was
    claimed, crashed and claimed again, forever."""
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO hi", metadata={"a": 1})
    sid = state["sessionId"]
    await redis.hset(keys.session(sid), field, value)
    assert (await get_session(redis, db, sid))["status"] == "pending"  # what the gateway and `show` read
    await make_worker()
    status, messages, _ = await wait_for(lambda: final_row(db, sid), timeout=30, what="the archive")
    assert status == "completed" and texts(messages)[-1] == "ECHO: ECHO hi"
    assert (await archive.fetch(db, sid)).user_metadata == {"a": 1}  # the row's own, as enqueue recorded it
