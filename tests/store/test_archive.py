"""shared.store.archive: the statements on opencode_sessions against a real PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.ids import SessionId, TicketId
from shared.store import archive, unfinished
from shared.store.archive import LAYER_KEY, ArchiveRow
from shared.store.live import LiveState
from shared.usage import Usage

pytestmark = pytest.mark.anyio

STATE = LiveState(session_id=SessionId("ses_" + "d" * 26), ticket_id=TicketId("T-1"), started_at=1_000, title="t")


async def test_a_new_row_reads_back_with_named_fields(db):
    await archive.insert_pending(db, STATE, user_metadata={"k": 1}, prompts=[{"messageID": "msg_1", "text": "hi"}])
    row = await archive.fetch(db, STATE.session_id)
    assert isinstance(row, ArchiveRow)
    assert (row.id, row.ticket_id, row.session_type, row.status, row.messages) == (
        STATE.session_id,
        "T-1",
        "chat",
        "pending",
        [],
    )
    assert (row.user_metadata, row.prompts, row.epoch, row.cancel_requested) == (
        {"k": 1},
        [{"messageID": "msg_1", "text": "hi"}],
        0,
        False,
    )
    assert row.pending_state(5_000) == LiveState(
        session_id=STATE.session_id,
        ticket_id=TicketId("T-1"),
        title="t",
        started_at=1_000,
        updated_at=5_000,
        metadata={"k": 1},
    )
    assert await archive.fetch(db, SessionId("ses_" + "e" * 26)) is None


async def test_the_owner_write_is_fenced_by_epoch(db):
    assert await archive.upsert_fenced(db, STATE, 2, status="running", now_ms=2_000)
    assert not await archive.upsert_fenced(db, STATE, 1, status="completed", now_ms=3_000)
    row = await archive.fetch(db, STATE.session_id)
    assert (row.status, row.epoch) == ("running", 2)
    assert await archive.upsert_fenced(
        db, STATE, 2, status="completed", messages=[{"m": 1}], completed_ms=4_000, now_ms=4_000
    )
    row = await archive.fetch(db, STATE.session_id)
    assert (row.status, row.messages, archive.to_epoch_ms(row.completed_at)) == ("completed", [{"m": 1}], 4_000)


async def test_a_cancel_is_recorded_only_in_an_unfinished_row(db):
    await archive.insert_pending(db, STATE, user_metadata={}, prompts=[])
    row = await archive.request_cancel(db, STATE.session_id)
    assert row is not None and row.cancel_requested and row.metadata[LAYER_KEY]["title"] == "t"
    assert [r.id for r in await unfinished.unfinished(db, None, 10)] == [STATE.session_id]
    assert await archive.upsert_fenced(db, STATE, 1, status="cancelled", completed_ms=9_000, now_ms=9_000)
    assert await archive.request_cancel(db, STATE.session_id) is None
    assert await unfinished.unfinished(db, None, 10) == []


async def test_history_counts_messages_without_reading_them(db):
    await archive.upsert_fenced(
        db, STATE, 1, status="completed", messages=[{"a": 1}, {"b": 2}], completed_ms=2, now_ms=2
    )
    [row] = await archive.history(
        db, ticket_id=TicketId("T-1"), session_type=None, before=None, limit=5, include_messages=False
    )
    assert (row.messages, row.message_count) == ([], 2)


async def test_the_archive_stores_the_usage_of_its_messages_and_a_claim_keeps_it(db):
    tokens = {"input": 100, "output": 20, "reasoning": 3, "cache": {"read": 5, "write": 7}}
    messages = [
        {"info": {"id": "msg_1", "role": "user"}, "parts": []},
        {"info": {"id": "msg_2", "role": "assistant", "cost": 0.0015, "tokens": tokens}, "parts": []},
        {"info": {"id": "msg_3", "role": "assistant", "cost": 0.00025, "tokens": tokens}, "parts": []},
    ]
    assert await archive.upsert_fenced(db, STATE, 1, status="completed", messages=messages, now_ms=2_000)
    expected = Usage(input=200, output=40, reasoning=6, cache_read=10, cache_write=14, cost=0.00175, steps=2)
    row = await archive.fetch(db, STATE.session_id)
    assert row.usage == expected and row.to_session()["usage"] == expected.to_json()
    assert await archive.upsert_fenced(db, STATE, 2, status="running", keep_messages=True, now_ms=3_000)
    row = await archive.fetch(db, STATE.session_id)
    assert row.usage == expected
    cur = await db.execute("SELECT sum(tokens_input), sum(cost), sum(steps) FROM opencode_sessions")
    assert await cur.fetchone() == (200, Decimal("0.00175"), 2)


async def test_characters_postgresql_refuses_are_stored_and_read_back_exactly(db):
    nul = "out\x00put \ud800 \uffff"
    await archive.insert_pending(db, STATE, user_metadata={"k\x00": nul}, prompts=[{"messageID": "m", "text": nul}])
    messages = [{"info": {"id": "m"}, "parts": [{"type": "tool", "output": nul}]}]
    prompts = [{"messageID": "n", "text": nul}]
    assert await archive.upsert_fenced(db, STATE, 1, status="running", prompts=prompts, now_ms=2)
    assert await archive.upsert_fenced(
        db, STATE, 1, status="error", messages=messages, error=f"failed: {nul}", completed_ms=3, now_ms=3
    )
    row = await archive.fetch(db, STATE.session_id)
    assert row.messages == messages
    assert row.error_message == f"failed: {nul}"
    assert row.user_metadata == {"k\x00": nul}
    assert row.prompts == [{"messageID": "m", "text": nul}, {"messageID": "n", "text": nul}]
    cur = await db.execute("SELECT messages #>> '{0,parts,0,output}' FROM opencode_sessions WHERE id = %s", (row.id,))
    assert (await cur.fetchone())[0] == "out\uffff0000put \uffffd800 \uffffffff"  # the documented stored form


async def test_a_prompt_recorded_on_a_live_job_reopens_an_ended_row_unless_a_cancel_was_asked(db):
    """`send` recorded the prompt after the owner archived: a completed row runs again (its finish goes on), but a
    cancelled one stays so. Was: reopened too, though its owner drops a cancelled session's prompts and ends it
    anyway: the backstop revived it to be aborted and ended a second time."""
    follow_up = {"messageID": "msg_2", "text": "and then?"}
    await archive.insert_pending(db, STATE, user_metadata={}, prompts=[])
    assert await archive.upsert_fenced(db, STATE, 1, status="completed", completed_ms=9_000, now_ms=9_000)
    await archive.record_prompt(db, STATE.session_id, follow_up)
    row = await archive.fetch(db, STATE.session_id)
    assert row is not None and (row.status, row.completed_at, row.prompts) == ("running", None, [follow_up])

    await archive.request_cancel(db, STATE.session_id)
    assert await archive.upsert_fenced(db, STATE, 1, status="cancelled", completed_ms=9_500, now_ms=9_500)
    await archive.record_prompt(db, STATE.session_id, {"messageID": "msg_3", "text": "stop?"})
    row = await archive.fetch(db, STATE.session_id)
    assert row is not None and row.status == "cancelled" and row.cancel_requested
    assert [p["messageID"] for p in row.prompts] == ["msg_2", "msg_3"]
