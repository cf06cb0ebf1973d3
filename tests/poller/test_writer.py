"""StateWriter on the event path: streamed text goes out as appends; anything else, or a part Redis does not hold
as this writer stored it, is written whole."""

from __future__ import annotations

import anyio
import pytest

from poller.event_apply import apply_events
from poller.mirror import Mirror, with_appends
from poller.writer import StateWriter
from shared.store import keys
from shared.store.live import LiveState, read_record
from tests.store.lua.helpers import SID, decode, enqueue

pytestmark = pytest.mark.anyio

PART = {"id": "prt_1", "messageID": "msg_1", "sessionID": SID, "type": "text", "text": "", "time": {"start": 1}}


def delta(piece: str) -> dict:
    props = {"sessionID": SID, "messageID": "msg_1", "partID": "prt_1", "field": "text", "delta": piece}
    return {"type": "message.part.delta", "properties": props}


async def published(pubsub) -> dict:
    with anyio.fail_after(5):
        while True:
            message = await pubsub.get_message(timeout=1)
            if message and message["type"] in ("message", b"message"):
                return decode(message["data"])


async def test_streamed_text_is_written_as_appends_and_the_live_state_holds_it_whole(redis):
    scripts = await enqueue(redis)
    [lease] = await scripts.claim("r1", 10_000, 10)
    writer = StateWriter(scripts, LiveState(session_id=SID, status="pending"))
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.updates(SID))
    await pubsub.get_message(timeout=1)
    mirror = Mirror()
    first = apply_events(mirror, [{"type": "message.part.updated", "properties": {"part": PART}}])
    await writer.apply(lease, first)
    mirror.apply(first)
    assert (await published(pubsub))["parts"] == [PART]
    for pieces, offset in ((["Hel", "lo"], 0), ([' "w"', "\n"], 5)):
        change = with_appends(mirror, apply_events(mirror, [delta(p) for p in pieces]))
        await writer.apply(lease, change)
        mirror.apply(change)
        event = await published(pubsub)
        assert "parts" not in event
        [append] = event["appends"]
        assert append["offset"] == offset and append["delta"] == "".join(pieces)
        assert append["length"] == offset + len("".join(pieces))
    record = await read_record(redis, SID)
    assert record is not None and record.parts["msg_1/prt_1"] == {**PART, "text": 'Hello "w"\n'}

    await redis.hset(keys.session_parts(SID), "msg_1/prt_1", b'{"id":"prt_1","messageID":"msg_1","text":"?"}')
    change = with_appends(mirror, apply_events(mirror, [delta("!")]))
    await writer.apply(lease, change)  # refused as an append: written whole instead
    assert (await published(pubsub))["parts"] == [{**PART, "text": 'Hello "w"\n!'}]
    mirror.apply(change)
    record = await read_record(redis, SID)
    assert record is not None and record.parts["msg_1/prt_1"]["text"] == 'Hello "w"\n!'

    ended = {**PART, "text": 'Hello "w"\n!', "time": {"start": 1, "end": 2}}
    change = with_appends(
        mirror, apply_events(mirror, [{"type": "message.part.updated", "properties": {"part": ended}}])
    )
    await writer.apply(lease, change)  # the part ends with the text it had: no text crosses again
    [append] = (await published(pubsub))["appends"]
    assert append["delta"] == "" and append["part"] == {k: v for k, v in ended.items() if k != "text"}
    mirror.apply(change)
    record = await read_record(redis, SID)
    assert record is not None and record.parts["msg_1/prt_1"] == ended
    await pubsub.aclose()
