from __future__ import annotations

import json

from redis.asyncio import Redis

from shared.ids import SessionId
from shared.models import index_event, prompt_entry
from shared.store.lua import Scripts

SID = SessionId("ses_" + "a" * 26)
SID2 = SessionId("ses_" + "b" * 26)


async def enqueue(redis: Redis, sid: SessionId = SID, ticket: str | None = "T-1", prompts: int = 1) -> Scripts:
    scripts = Scripts(redis)
    state = {"sessionId": sid, "sessionType": "ask", "status": "pending", "startedAt": 1000, "ticketId": ticket}
    await scripts.enqueue(
        sid,
        ticket,  # type: ignore[arg-type]
        job={"sessionId": sid, "sessionType": "ask", "epoch": "0"},
        state={k: str(v) for k, v in state.items() if v is not None},
        prompts=[prompt_entry(f"msg_{i:026d}", f"prompt {i}") for i in range(prompts)],
        index_event=index_event("appeared", state),
    )
    return scripts


def decode(raw: bytes) -> dict:
    return json.loads(raw)
