"""shared.store.live: the one encoding of the live-state hash, round-tripped through real Redis."""

from __future__ import annotations

import json

import pytest

from shared.ids import SessionId, TicketId
from shared.models import dumps
from shared.store import keys
from shared.store.live import LiveRecord, LiveState, encode_change, read_record
from shared.store.lua import Scripts

pytestmark = pytest.mark.anyio

SID = SessionId("ses_" + "c" * 26)


async def test_what_enqueue_writes_reads_back_as_the_same_state(redis):
    state = LiveState(
        session_id=SID,
        ticket_id=TicketId("T-9"),
        session_type="admin",
        title="A title",
        started_at=1234,
        updated_at=1300,
        metadata={"k": [1, "v"]},
    )
    await Scripts(redis).enqueue(
        SID, state.ticket_id, job={"epoch": "0"}, state=state.encode(), prompts=[], index_event=state.index_event("x")
    )
    record = await read_record(redis, SID)
    assert record is not None
    updated_at = int(await redis.hget(keys.session(SID), "updatedAt"))  # enqueue.lua stamps Redis's clock
    assert record.state == LiveState(**{**_fields(state), "seq": 1, "updated_at": updated_at})
    assert (record.infos, record.parts) == ({}, {})


def _fields(state: LiveState) -> dict:
    return {name: getattr(state, name) for name in state.__dataclass_fields__}


def test_each_field_has_one_decoding_whatever_is_missing():
    state = LiveState.decode({b"sessionId": SID.encode(), b"ticketId": b"", b"title": b"", b"error": b""})
    assert state == LiveState(session_id=SID)
    assert (state.session_type, state.status, state.started_at, state.updated_at, state.seq) == (
        "chat",
        "pending",
        0,
        0,
        0,
    )
    assert (state.ticket_id, state.title, state.error, state.metadata, state.current_tool_calls) == (
        None,
        None,
        None,
        None,
        [],
    )
    assert LiveState.decode({}) is None
    assert LiveState.decode({"sessionId": None, "status": None}) is None  # an HMGET of a hash that is gone


def test_a_status_change_writes_its_error_and_a_tool_call_change_its_list():
    fields, event_state = encode_change(5, status="error", error="boom", tool_calls=[{"id": "t"}])
    assert fields == {"updatedAt": "5", "status": "error", "error": "boom", "currentToolCalls": '[{"id":"t"}]'}
    assert json.loads(event_state) == {
        "updatedAt": 5,
        "status": "error",
        "error": "boom",
        "currentToolCalls": [{"id": "t"}],
    }
    assert encode_change(6, status="running") == (
        {"updatedAt": "6", "status": "running", "error": ""},
        '{"updatedAt":6,"status":"running","error":null}',
    )
    assert encode_change(7) == ({"updatedAt": "7"}, '{"updatedAt":7}')


def test_messages_are_rebuilt_in_opencode_order():
    record = LiveRecord(
        LiveState(session_id=SID),
        {"msg_2": {"id": "msg_2"}, "msg_1": {"id": "msg_1"}},
        {"msg_2/prt_b": {"id": "prt_b"}, "msg_2/prt_a": {"id": "prt_a"}},
    )
    assert record.messages() == [
        {"info": {"id": "msg_1"}, "parts": []},
        {"info": {"id": "msg_2"}, "parts": [{"id": "prt_a"}, {"id": "prt_b"}]},
    ]


async def test_stored_values_orjson_refuses_read_back_through_the_standard_library(redis):
    """A lone surrogate's escape and an integer wider than 64 bits are JSON that orjson will not read."""
    part = {"id": "prt_1", "type": "text", "text": "cut \ud800 here", "size": 2**70}
    state = LiveState(session_id=SID, session_type="ask", started_at=1, metadata={"odd": "\udfff"})
    await Scripts(redis).enqueue(
        SID,
        None,
        job={"epoch": "0"},
        state=state.encode(),
        prompts=[],
        index_event=state.index_event("x"),
        parts={"msg_1/prt_1": dumps(part)},
    )
    record = await read_record(redis, SID)
    assert record is not None
    assert record.parts == {"msg_1/prt_1": part}
    assert record.state.metadata == {"odd": "\udfff"}
