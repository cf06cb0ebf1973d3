"""apply.lua: writes only the change, bumps seq, publishes it — and refuses a stale token."""

from __future__ import annotations

import anyio
import pytest

from shared.store import keys
from shared.store.lease import Lease
from shared.store.lua import StateChange
from tests.store.lua.helpers import SID, decode, enqueue

pytestmark = pytest.mark.anyio


def change(**overrides) -> StateChange:
    values = {
        "fields": {"status": "running"},
        "messages": {"msg_1": '{"id":"msg_1"}'},
        "parts": {"msg_1/prt_1": '{"id":"prt_1","messageID":"msg_1"}'},
        "removed_messages": [],
        "removed_parts": [],
        "event_state": '{"x":1}',
        "index_event": "",
    }
    values.update(overrides)
    return StateChange(**values)


async def test_apply_writes_bumps_seq_and_publishes(redis):
    scripts = await enqueue(redis)
    [lease] = await scripts.claim("r1", 10_000, 10)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.updates(SID), keys.LIVE_UPDATES)
    await pubsub.get_message(timeout=1)
    await pubsub.get_message(timeout=1)
    seq = await scripts.apply(lease, change(index_event='{"type":"status"}'))
    assert seq == 2  # enqueue made the pending state seq 1
    assert await redis.hget(keys.session(SID), "status") == b"running"
    assert await redis.hget(keys.session_parts(SID), "msg_1/prt_1") == b'{"id":"prt_1","messageID":"msg_1"}'
    received = []
    with anyio.fail_after(5):
        while len(received) < 2:
            message = await pubsub.get_message(timeout=1)
            if message and message["type"] in ("message", b"message"):
                received.append(decode(message["data"]))
    update = next(e for e in received if e.get("type") == "update")
    assert update == {
        "seq": 2,
        "type": "update",
        "sessionId": SID,
        "state": {"x": 1},
        "messages": [{"id": "msg_1"}],
        "parts": [{"id": "prt_1", "messageID": "msg_1"}],
        "removedMessages": [],
        "removedParts": [],
    }
    assert {"seq": 2, "type": "status"} in received
    await pubsub.aclose()


async def test_apply_removes_and_handles_large_changes(redis):
    scripts = await enqueue(redis)
    [lease] = await scripts.claim("r1", 10_000, 10)
    many = {f"msg_1/prt_{i:05d}": "{}" for i in range(3000)}  # more than one unpack() slice
    await scripts.apply(lease, change(parts=many))
    assert await redis.hlen(keys.session_parts(SID)) == 3000
    await scripts.apply(lease, change(parts={}, messages={}, removed_messages=["msg_1"], removed_parts=list(many)))
    assert await redis.hlen(keys.session_parts(SID)) == 0
    assert await redis.hlen(keys.session_messages(SID)) == 0


async def test_stale_token_is_refused_and_writes_nothing(redis):
    scripts = await enqueue(redis)
    [lease] = await scripts.claim("r1", 10_000, 10)
    before = await redis.hgetall(keys.session(SID))
    assert await scripts.apply(Lease.from_token(SID, "0:r0"), change()) == -1
    await redis.delete(keys.lease(SID))
    assert await scripts.apply(lease, change()) == -1  # an expired lease is no lease
    assert await redis.hgetall(keys.session(SID)) == before
    assert await redis.hlen(keys.session_parts(SID)) == 0
