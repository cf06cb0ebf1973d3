"""A run that waits for a person: the poller shows the request in `pending` with status `waiting`, from the
event stream and from one GET /permission and GET /question per replica tick (never one per session)."""

from __future__ import annotations

from typing import Any

import pytest

from shared import commands
from shared.ids import SessionId
from shared.store.live import read_record
from tests.helpers import sim, wait_for

pytestmark = pytest.mark.anyio


async def waiting(redis: Any, sid: str) -> Any:
    record = await read_record(redis, SessionId(sid))
    return record if record is not None and record.state.status == "waiting" else None


async def gone(redis: Any, sid: str) -> bool:
    return await read_record(redis, SessionId(sid)) is None


@pytest.mark.parametrize("events", [True, False], ids=["events", "polling-alone"])
async def test_permission_request_shows_as_waiting_then_the_run_completes(
    make_worker, redis, db, opencode, simulator_url, events
) -> None:
    await make_worker(opencode_events=events)
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="TOOL run", permission=["bash=ask"])
    sid = state["sessionId"]
    record = await wait_for(lambda: waiting(redis, sid), timeout=20, what="status waiting")
    [entry] = record.state.pending
    [request] = await sim(simulator_url, "GET", "/permission")
    assert entry["kind"] == "permission" and entry["id"] == request["id"]
    assert entry["patterns"] == ["echo hello"] and entry["metadata"] == {"command": "echo hello"}
    assert entry["always"] == ["echo *"] and isinstance(entry["askedAt"], int)
    assert entry["tool"] == request["tool"]
    assert [c["callID"] for c in record.state.current_tool_calls] == [request["tool"]["callID"]]
    assert record.to_session()["pending"] == [entry]

    await sim(simulator_url, "POST", f"/permission/{request['id']}/reply", {"reply": "once"})
    await wait_for(lambda: gone(redis, sid), timeout=20, what="the session archived")
    messages = await opencode.messages(sid)
    assert messages[1]["parts"][1]["state"]["status"] == "completed"


async def test_question_shows_with_its_options(make_worker, redis, db, opencode, simulator_url) -> None:
    await make_worker()
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="QUESTION pick")
    record = await wait_for(lambda: waiting(redis, state["sessionId"]), timeout=20, what="status waiting")
    [entry] = record.state.pending
    assert entry["kind"] == "question" and entry["id"].startswith("que")
    assert [o["label"] for o in entry["questions"][0]["options"]] == ["Red", "Blue"]
    await sim(simulator_url, "POST", f"/question/{entry['id']}/reject")
    await wait_for(lambda: gone(redis, state["sessionId"]), timeout=20, what="the session archived")


async def test_one_list_call_per_replica_tick_whatever_the_sessions(
    make_worker, redis, db, opencode, simulator_url
) -> None:
    await make_worker()
    sids = [
        (await commands.enqueue(redis, db, opencode, session_type="ask", prompt="TOOL run", permission=["bash=ask"]))[
            "sessionId"
        ]
        for _ in range(4)
    ]
    for sid in sids:
        await wait_for(lambda s=sid: waiting(redis, s), timeout=20, what="status waiting")
    stats = await sim(simulator_url, "GET", "/__sim/stats")
    ticks = stats["requests"]["GET /session/status"]
    assert stats["requests"]["GET /permission"] <= ticks + 1
    assert stats["requests"]["GET /question"] <= ticks + 1
