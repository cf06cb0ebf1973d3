"""Parts are stored under `messageID/partID`: an id holding a `/` (or the `%` its escape uses) must still name its own
message and part, through the poll path, the event path's appends and removals, and a client following it."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from poller.session_mirror import SessionMirror
from shared.models import part_ids, part_key_of
from shared.store.live import read_record
from shared.store.lua import Scripts
from tests.poller.test_event_path_hardening_redis import Follower, claimed, deps_for, same
from tests.store.lua.helpers import SID

pytestmark = pytest.mark.anyio

HOSTILE = ["msg", "msg/1", "1/prt", "prt", "/", "%", "%2F", "%25", "a%2Fb/c", "", "é/\U0001f600"]


@pytest.mark.parametrize("message_id", HOSTILE)
@pytest.mark.parametrize("part_id", HOSTILE)
def test_a_part_key_splits_back_into_its_two_ids(message_id: str, part_id: str) -> None:
    assert part_ids(part_key_of(message_id, part_id)) == (message_id, part_id)


def test_two_parts_never_share_a_key() -> None:
    keys = {part_key_of(m, p) for m in HOSTILE for p in HOSTILE}
    assert len(keys) == len(HOSTILE) ** 2
    assert part_key_of("msg_1", "prt_1") == "msg_1/prt_1"  # OpenCode's own ids are stored as they are


def info(mid: str) -> dict[str, Any]:
    return {"id": mid, "sessionID": SID, "role": "assistant", "time": {"created": 1}}


def text(mid: str, pid: str, body: str, *, ended: bool = True) -> dict[str, Any]:
    timing = {"start": 1, "end": 2} if ended else {"start": 1}
    return {"id": pid, "messageID": mid, "sessionID": SID, "type": "text", "text": body, "time": timing}


def record(n: int, kind: str, **props: Any) -> dict[str, Any]:
    return {"id": f"evt_{n:012x}", "type": kind, "properties": {"sessionID": SID, **props}}


async def test_ids_holding_a_slash_keep_their_parts_apart_through_polls_appends_and_removals(redis: Redis) -> None:
    """Was: `msg`'s part `1/prt` and `msg/1`'s part `prt` were one field (`msg/1/prt`): one overwrote the other, the
    snapshot put it under `msg`, appends named message `msg` and part `1/prt`, and removing `msg` took `msg/1`'s."""
    lease = await claimed(redis)
    mirror = await SessionMirror.load(deps_for(redis, Scripts(redis)), lease, spread=0)
    follower = Follower(redis)
    await follower.start()
    listed = [
        {"info": info("msg"), "parts": [text("msg", "1/prt", "first")]},
        {"info": info("msg/1"), "parts": [text("msg/1", "prt", "", ended=False)]},
    ]
    await mirror.write_poll(same(listed), None)
    stored = await read_record(redis, SID)
    assert stored is not None and stored.messages() == listed

    for n, piece in enumerate(["Hel", "lo"], 1):
        delta = record(n, "message.part.delta", messageID="msg/1", partID="prt", field="text", delta=piece)
        await mirror.write_events([delta], gap=False)
    await follower.catch_up()
    assert follower.resyncs == 0  # the appends named `msg/1` and `prt`: the client found the part they extend
    listed[1]["parts"] = [text("msg/1", "prt", "Hello", ended=False)]
    assert follower.state["messages"] == listed

    await mirror.write_events([record(3, "message.removed", messageID="msg")], gap=False)
    await follower.catch_up()
    stored = await read_record(redis, SID)
    assert stored is not None and stored.messages() == listed[1:] == follower.state["messages"]
    assert follower.resyncs == 0

    await mirror.write_poll(same(listed[1:]), None)  # the confirming poll agrees: nothing to write
    assert mirror.messages == listed[1:]
