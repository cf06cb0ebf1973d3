"""Usage through the gateway: in every session and list response, and GET /tickets/{id}/usage."""

from __future__ import annotations

import httpx
import pytest

from shared import commands
from shared.models import dumps
from shared.store import archive, keys
from shared.usage import Usage
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def test_ticket_usage_is_the_sum_of_its_sessions_and_every_response_carries_usage(
    make_worker, make_gateway, redis, db, opencode
):
    await make_worker()
    ids = []
    for prompt in ("TOOL run echo", "ECHO hi"):
        state = await commands.enqueue(redis, db, opencode, session_type="ask", ticket_id="T-U", prompt=prompt)
        ids.append(state["sessionId"])

    async def both_archived() -> list[archive.ArchiveRow] | None:
        rows = [await archive.fetch(db, sid) for sid in ids]
        return rows if all(r is not None and not r.unfinished for r in rows) else None

    rows = await wait_for(both_archived, timeout=30, what="both sessions archived")
    expected = [Usage.of_messages(await opencode.messages(sid)) for sid in ids]
    assert [r.usage for r in rows] == expected and [u.steps for u in expected] == [2, 1]
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway) as client:
        answer = (await client.get("/tickets/T-U/usage")).json()
        assert answer["ticketId"] == "T-U"
        by_id = {s["sessionId"]: s for s in answer["sessions"]}
        assert [by_id[sid]["usage"] for sid in ids] == [u.to_json() for u in expected]
        assert answer["total"] == Usage.total(expected).to_json()
        assert answer["total"] == Usage.total(Usage.from_json(s["usage"]) for s in answer["sessions"]).to_json()

        assert (await client.get(f"/sessions/{ids[0]}")).json()["usage"] == expected[0].to_json()
        page = (await client.get("/tickets/T-U/sessions")).json()["sessions"]
        assert {s["sessionId"]: s["usage"] for s in page} == {
            sid: u.to_json() for sid, u in zip(ids, expected, strict=True)
        }
        assert (await client.get("/tickets/T-none/usage")).json() == {
            "ticketId": "T-none",
            "total": Usage().to_json(),
            "sessions": [],
        }
        bad = await client.get("/tickets/bad:id/usage")
        assert bad.status_code == 400


async def test_a_live_sessions_usage_comes_from_its_live_state(make_gateway, redis, db, opencode):
    state = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-L")
    sid = state["sessionId"]
    running = Usage(input=10, output=2, cost=0.5, steps=1)
    await redis.hset(keys.session(sid), "usage", dumps(running.to_json()))  # as the poller writes it
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway) as client:
        answer = (await client.get("/tickets/T-L/usage")).json()
        assert answer["sessions"] == [
            {
                "sessionId": sid,
                "sessionType": "chat",
                "status": "pending",
                "startedAt": state["startedAt"],
                "live": True,
                "usage": running.to_json(),
            }
        ]
        assert answer["total"] == running.to_json()
        assert (await client.get(f"/sessions/{sid}")).json()["usage"] == running.to_json()
        live = (await client.get("/sessions?live=true")).json()["sessions"]
        assert [s["usage"] for s in live] == [running.to_json()]


async def test_a_ticket_past_the_listed_sessions_totals_them_all(make_gateway, db):
    """The list holds the newest 1,000 sessions; the total is over every one. Was: over the listed ones only,
    silently short (`usage --ticket` summed them all)."""
    await db.execute(
        "INSERT INTO opencode_sessions (id, ticket_id, session_type, status, messages, metadata, started_at,"
        " completed_at, tokens_input, steps) SELECT 'ses_' || lpad(n::text, 26, '0'), 'T-MANY', 'ask', 'completed',"
        " '[]', '{}', now() - make_interval(secs => n), now(), 1, 1 FROM generate_series(1, 1001) AS n"
    )
    async with httpx.AsyncClient(base_url=await make_gateway()) as client:
        answer = (await client.get("/tickets/T-MANY/usage")).json()
    assert len(answer["sessions"]) == 1000 and "ses_" + "1001".zfill(26) not in {
        s["sessionId"] for s in answer["sessions"]
    }
    assert (answer["total"]["tokens"]["input"], answer["total"]["steps"]) == (1001, 1001)
