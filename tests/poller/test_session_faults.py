"""A fault that repeats for one session ends that session alone: content PostgreSQL refuses, a step that raises."""

from __future__ import annotations

import pytest

from shared import commands
from shared.sessions import get_session
from shared.store import archive, keys
from tests.helpers import wait_for

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


async def test_a_nul_prompt_through_the_python_api_is_stored_and_answered(make_worker, redis, db, opencode):
    await make_worker()
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt=NUL_TEXT, metadata={"k": "v\x00"})
    status, messages, _ = await wait_for(lambda: final_row(db, state["sessionId"]), timeout=30, what="the archive")
    assert status == "completed"
    assert texts(messages) == [NUL_TEXT, f"ECHO: {NUL_TEXT}"]
    session = await get_session(redis, db, state["sessionId"])
    assert session["metadata"] == {"k": "v\x00"}
