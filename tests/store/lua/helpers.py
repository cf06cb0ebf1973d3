from __future__ import annotations

import json

from redis.asyncio import Redis

from shared.ids import SessionId, TicketId
from shared.models import prompt_entry
from shared.store.live import LiveState
from shared.store.lua import Scripts

SID = SessionId("ses_" + "a" * 26)
SID2 = SessionId("ses_" + "b" * 26)


async def enqueue(redis: Redis, sid: SessionId = SID, ticket: str | None = "T-1", prompts: int = 1) -> Scripts:
    scripts = Scripts(redis)
    state = LiveState(
        session_id=sid, session_type="ask", started_at=1000, ticket_id=TicketId(ticket) if ticket else None
    )
    await scripts.enqueue(
        sid,
        state.ticket_id,
        job={"sessionId": sid, "sessionType": "ask", "epoch": "0"},
        state=state.encode(),
        prompts=[prompt_entry(f"msg_{i:026d}", f"prompt {i}") for i in range(prompts)],
        index_event=state.index_event("appeared"),
    )
    return scripts


def decode(raw: bytes) -> dict:
    return json.loads(raw)
