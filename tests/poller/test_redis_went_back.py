"""Redis that went back (restarted from its append-only file or a snapshot, or failed over to a replica that
lagged): every key is there, the last writes are not. The owner notices at its next lease renewal and the session is
rebuilt from its row and OpenCode (poller/rewound.py): nothing it lost stays lost."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
import structlog
from redis.asyncio import Redis

from shared import commands
from shared.ids import SessionId
from shared.opencode.client import OpenCodeClient
from shared.store import archive, keys
from shared.store.live import read_record
from shared.store.lua import Scripts
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def snapshot(redis: Redis) -> dict[bytes, tuple[bytes, int]]:
    """Every key as DUMP has it, with its time to live: what Redis would come back with (a key gone between the
    listing and its DUMP, as the poller writes on, is not in it)."""
    dumped = {}
    for key in await redis.keys("*"):
        async with redis.pipeline(transaction=True) as pipe:
            value, ttl_ms = await pipe.dump(key).pttl(key).execute()
        if value is not None:
            dumped[key] = (value, max(0, ttl_ms))
    return dumped


async def come_back_with(redis: Redis, dumped: dict[bytes, tuple[bytes, int]]) -> None:
    await redis.flushall()
    for key, (value, ttl_ms) in dumped.items():
        await redis.restore(key, ttl_ms, value, replace=True)  # the poller writes on meanwhile


async def test_a_session_redis_went_back_on_is_rebuilt_with_all_it_lost(make_worker, redis, db, opencode):
    """The run asked a question and waits for its answer, and a follow-up was queued meanwhile; then Redis came back
    as it was before either. Was: nothing changed in OpenCode, so the owner wrote nothing again: the live state
    lacked the question for as long as the run waited, and the follow-up, gone from the job, never ran."""
    worker = await make_worker(lease_ttl_s=1.5)  # renewed every 0.5 s
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="QUESTION which color?")
    sid = SessionId(state["sessionId"])

    async def held() -> Any:
        entry = worker.held.get(sid)
        return entry if entry is not None and entry.tracker is not None and entry.tracker.marks else None

    await wait_for(held, timeout=20, what="the session tracked")
    before = await snapshot(redis)

    async def asking() -> Any:
        record = await read_record(redis, sid)
        return record if record is not None and record.state.pending else None

    await wait_for(asking, timeout=20, what="the question in the live state")
    follow_up = await commands.send(redis, db, sid, "ECHO and then?")
    seen = int(await redis.hget(keys.session(sid), "seq"))
    await come_back_with(redis, before)

    async def rebuilt() -> Any:
        record = await read_record(redis, sid)
        if record is None or not record.state.pending or record.state.seq <= seen:
            return None
        queued = [json.loads(p)["messageID"] for p in await redis.lrange(keys.prompts(sid), 0, -1)]
        delivered = [m["info"]["id"] for m in record.messages()]
        return record if follow_up in queued + delivered else None  # OpenCode queues it behind the question

    await wait_for(rebuilt, timeout=20, what="the live state rebuilt past what clients saw")

    async def whole() -> bool:
        record = await read_record(redis, sid)
        return record is not None and record.messages() == await opencode.messages(sid)

    await wait_for(whole, timeout=20, what="the live messages equal to OpenCode's")


async def test_a_session_writing_while_its_lease_is_renewed_is_never_taken_for_one_redis_lost(
    make_worker, redis, db, opencode, monkeypatch
):
    """What Redis holds is read by the renewal, the owner's marks before it: a write that lands in between only puts
    Redis further ahead. Read after, they would find Redis behind a write it had just taken, and rebuild a healthy
    session. (The renewal's answer is held back a moment here, as a busy event loop holds it.)"""
    renew = Scripts.renew

    async def answered_late(self: Scripts, *args: Any) -> Any:
        renewed = await renew(self, *args)
        await anyio.sleep(0.05)  # meanwhile the trackers write on
        return renewed

    monkeypatch.setattr(Scripts, "renew", answered_late)
    with structlog.testing.capture_logs() as logs:
        await make_worker(lease_ttl_s=0.3)  # renewed every 0.1 s, while the answers stream
        states = [
            await commands.enqueue(redis, db, opencode, session_type="ask", prompt=f"SLOW THINK answer {n}")
            for n in range(4)
        ]

        async def archived() -> bool:
            rows = [await archive.fetch(db, SessionId(s["sessionId"])) for s in states]
            return all(row is not None and row.status == "completed" for row in rows)

        await wait_for(archived, timeout=60, what="every session archived")
    assert not [entry for entry in logs if entry["event"] == "redis_went_back"]


async def test_a_session_writing_on_after_redis_went_back_is_rebuilt_at_its_next_write(
    make_worker, redis, db, simulator_process
):
    """The answer streams on: the owner's next write lands on the older state, and Redis answers it a seq at or
    below one it had answered before. Was: the writer took that seq as its own, so the marks the renewal compares
    followed Redis down and nothing was ever noticed; the seqs clients had seen were published again with other
    content. Now that write stops the owner and the session is rebuilt past every seq published."""
    url = simulator_process(speed=1.0)  # SLOW streams its answer over a few seconds
    published: list[int] = []
    async with OpenCodeClient(url, timeout_s=5) as opencode:
        with structlog.testing.capture_logs() as logs:
            await make_worker(lease_ttl_s=60.0, opencode_url=url)  # no renewal but the first: only a write tells
            state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="SLOW tell me")
            sid = SessionId(state["sessionId"])
            async with redis.pubsub() as pubsub, anyio.create_task_group() as tg:
                await pubsub.subscribe(keys.updates(sid))

                async def read() -> None:
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            published.append(json.loads(message["data"])["seq"])

                tg.start_soon(read)

                async def seq_past(floor: int) -> int | None:
                    seq = await redis.hget(keys.session(sid), "seq")
                    return int(seq) if seq is not None and int(seq) >= floor else None

                await wait_for(lambda: seq_past(3), timeout=20, what="the answer streaming")
                before, held = await snapshot(redis), int(await redis.hget(keys.session(sid), "seq"))
                seen = await wait_for(lambda: seq_past(held + 2), timeout=20, what="two writes more")
                await come_back_with(redis, before)
                rewound_at = len(published)

                async def archived() -> Any:
                    row = await archive.fetch(db, sid)
                    return row if row is not None and row.status == "completed" else None

                row = await wait_for(archived, timeout=30, what="the session archived")
                tg.cancel_scope.cancel()
            assert row.messages == await opencode.messages(sid)
    assert [entry for entry in logs if entry["event"] == "redis_went_back"]
    after = published[rewound_at:]
    # the write that found Redis behind went out at a seq seen before (streams drop it); nothing else does
    assert len([seq for seq in after if seq <= seen]) <= 1 and after[-1] > seen, (seen, after)
