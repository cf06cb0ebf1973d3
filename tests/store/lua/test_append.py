"""append.lua: streamed text is appended to a part's stored JSON and published alone — fenced, and refused when
the part is not stored as the writer expects."""

from __future__ import annotations

import dataclasses
import json

import anyio
import pytest

from shared.models import dumps
from shared.store import keys
from shared.store.lease import Lease
from shared.store.live import read_record
from shared.store.lua import PartAppend, StateChange
from tests.store.lua.helpers import SID, decode, enqueue

pytestmark = pytest.mark.anyio

KEY = "msg_1/prt_1"
PART = '{"id":"prt_1","messageID":"msg_1","type":"text","time":{"start":1},"text":"Hello"}'


def appending(delta: str, *, stored: str, offset: int = 5, prefix: str = "") -> PartAppend:
    escaped = dumps(delta)[1:-1]
    prefix_bytes = stored.index('"text":"') + len('"text":"')
    return PartAppend(KEY, "text", len(stored.encode()), prefix_bytes, prefix, offset, offset + len(delta), escaped)


async def claimed_with_part(redis):
    scripts = await enqueue(redis)
    [lease] = await scripts.claim("r1", 10_000, 10)
    change = StateChange(fields={}, messages={}, parts={KEY: PART}, removed_messages=[], removed_parts=[])
    assert await scripts.apply(lease, change) == 2
    return scripts, lease


async def next_update(pubsub) -> dict:
    with anyio.fail_after(5):
        while True:
            message = await pubsub.get_message(timeout=1)
            if message and message["type"] in ("message", b"message"):
                return decode(message["data"])


async def test_append_extends_the_stored_text_bumps_seq_and_publishes_only_the_new_text(redis):
    scripts, lease = await claimed_with_part(redis)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.updates(SID))
    await pubsub.get_message(timeout=1)
    delta = ', "world"\n'
    assert await scripts.append(lease, 1234, [appending(delta, stored=PART)]) == 3
    update = await next_update(pubsub)
    assert update == {
        "seq": 3,
        "type": "update",
        "sessionId": SID,
        "state": {"updatedAt": 1234},
        "appends": [
            {"messageID": "msg_1", "partID": "prt_1", "field": "text", "offset": 5, "length": 15, "delta": delta}
        ],
    }
    record = await read_record(redis, SID)
    assert record is not None and record.state.seq == 3 and record.state.updated_at == 1234
    assert record.parts[KEY]["text"] == 'Hello, "world"\n'  # the live state holds the whole text
    stored = (await redis.hget(keys.session_parts(SID), KEY)).decode()
    assert json.loads(stored) == {**json.loads(PART), "text": 'Hello, "world"\n'}
    assert await scripts.append(lease, 1235, [appending("!", stored=stored, offset=15)]) == 4
    assert (await read_record(redis, SID)).parts[KEY]["text"] == 'Hello, "world"\n!'
    await pubsub.aclose()


async def test_an_append_may_replace_the_other_fields_and_publishes_the_part_without_its_text(redis):
    scripts, lease = await claimed_with_part(redis)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.updates(SID))
    await pubsub.get_message(timeout=1)
    ended = {"id": "prt_1", "messageID": "msg_1", "type": "text", "time": {"start": 1, "end": 2}}
    prefix = dumps(ended)[:-1] + ',"text":"'
    assert await scripts.append(lease, 7, [appending("", stored=PART, prefix=prefix)]) == 3
    [append] = (await next_update(pubsub))["appends"]
    expected = {"messageID": "msg_1", "partID": "prt_1", "field": "text", "offset": 5, "length": 5}
    assert append == expected | {"delta": "", "part": ended}
    assert (await read_record(redis, SID)).parts[KEY] == {**ended, "text": "Hello"}
    await pubsub.aclose()


async def test_stale_fencing_token_is_refused_and_writes_nothing(redis):
    scripts, lease = await claimed_with_part(redis)
    before = await redis.hgetall(keys.session(SID))
    assert await scripts.append(Lease.from_token(SID, "0:r0"), 1, [appending(" there", stored=PART)]) == -1
    await redis.delete(keys.lease(SID))
    assert await scripts.append(lease, 1, [appending(" there", stored=PART)]) == -1  # an expired lease is no lease
    assert await redis.hgetall(keys.session(SID)) == before
    assert await redis.hget(keys.session_parts(SID), KEY) == PART.encode()


async def test_a_part_not_stored_as_expected_is_refused_and_nothing_is_written(redis):
    scripts, lease = await claimed_with_part(redis)
    before = await redis.hgetall(keys.session(SID))
    other_length = appending(" there", stored=PART + " ")
    assert await scripts.append(lease, 1, [appending(" there", stored=PART), other_length]) == -2
    unknown = PartAppend("msg_1/prt_9", "text", 0, 0, "", 0, 1, "x")
    assert await scripts.append(lease, 1, [unknown]) == -2
    not_a_string_last = '{"id":"prt_1","messageID":"msg_1","type":"text","text":"Hello","time":{"start":1}}'
    assert len(not_a_string_last) == len(PART)
    misplaced = dataclasses.replace(appending(" there", stored=PART), prefix_bytes=len(PART) - 8)
    assert await scripts.append(lease, 1, [misplaced]) == -2  # the text does not start there
    await redis.hset(keys.session_parts(SID), KEY, not_a_string_last)
    assert await scripts.append(lease, 1, [appending(" there", stored=PART)]) == -2
    assert await redis.hgetall(keys.session(SID)) == before
    assert await redis.hget(keys.session_parts(SID), KEY) == not_a_string_last.encode()
