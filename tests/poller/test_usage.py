"""Usage in the live state and the archive: it grows with each model step and ends equal to OpenCode's sum."""

from __future__ import annotations

import json

import pytest

from shared import commands
from shared.store import archive, keys
from shared.usage import Usage
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def test_live_usage_grows_with_each_step_and_the_archive_holds_the_final_sum(make_worker, redis, db, opencode):
    await make_worker()
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="TOOL SLOW run echo")
    sid = state["sessionId"]
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.updates(sid))

    async def live_steps() -> int | None:
        raw = await redis.hget(keys.session(sid), "usage")
        steps = Usage.from_json(json.loads(raw)).steps if raw else 0
        return steps if steps >= 1 else None

    assert await wait_for(live_steps, timeout=30, what="the first step's usage in the live state") == 1

    async def final_row() -> archive.ArchiveRow | None:
        row = await archive.fetch(db, sid)
        return row if row is not None and not row.unfinished else None

    row = await wait_for(final_row, timeout=30, what="the archive")
    expected = Usage.of_messages(await opencode.messages(sid))
    assert expected.steps == 2 and expected.input == 200
    assert row.usage == expected
    streamed = []
    while (msg := await pubsub.get_message(timeout=0.5)) is not None:
        if msg["type"] in ("message", b"message"):
            event = json.loads(msg["data"])
            if "usage" in event.get("state", {}):
                streamed.append(Usage.from_json(event["state"]["usage"]))
    await pubsub.aclose()
    # a step's message appears with zero tokens and gets them when the step ends: usage only ever grows
    assert [(u.steps, u.input) for u in streamed] == sorted((u.steps, u.input) for u in streamed)
    assert streamed[0].steps == 1 and streamed[-1] == expected
