"""JSON as deep as OpenCode's may be: a model writes a tool's input, and orjson reads 1,024 levels of it. Every
step after the read (compare, write to Redis, read back, archive as jsonb, read that back) must take what was read,
or the session fails on every poll until it ends in error (shared.nesting)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from poller.event_apply import apply_events
from poller.mirror import Mirror, diff, share_unchanged, with_appends
from poller.writer import StateWriter
from shared.models import TOO_DEEP, loads
from shared.nesting import DEEPEST, FRAMES, too_deep
from shared.store.live import LiveState, read_record
from shared.store.lua import Scripts
from shared.store.unstorable import dumps_jsonb, loads_jsonb
from tests.odd_shapes import transcript

pytestmark = pytest.mark.anyio

SID = "ses_x"
INPUT_LEVELS = DEEPEST - 6  # a message list's own levels above: list, message, parts, part, state, input


def nested(levels: int) -> Any:
    value: Any = "\x00 and \ud800"  # what the archive must escape, at the very bottom
    for _ in range(levels):
        value = {"a": value}
    return value


def with_input(levels: int) -> list[dict[str, Any]]:
    messages = transcript()
    messages[1]["parts"][1]["state"]["input"] = {"command": nested(levels)}
    return messages


@pytest.mark.parametrize("levels", [250, 300, 1_000, INPUT_LEVELS])
async def test_a_tool_input_as_deep_as_orjson_reads_goes_through_every_step(redis, db, levels):
    raw = json.dumps(with_input(levels))
    polled = loads(raw)
    assert polled == loads(raw)
    mirror = Mirror.of(transcript())
    change = with_appends(mirror, diff(mirror, share_unchanged(transcript(), polled, mirror)))
    assert change.parts, "the deep input is a change"

    scripts = Scripts(redis)
    state = LiveState(session_id=SID, session_type="chat", status="running", started_at=1)
    job = {"sessionId": SID, "epoch": "0"}
    await scripts.enqueue(SID, None, job=job, state=state.encode(), prompts=[], index_event=state.index_event("a"))
    [lease] = await scripts.claim("replica", 60_000, 1)
    await StateWriter(scripts, state).apply(lease, change)
    streamed = with_appends(
        mirror, apply_events(mirror, [{"type": "message.part.updated", "properties": {"part": polled[1]["parts"][1]}}])
    )
    await StateWriter(scripts, state).apply(lease, streamed)
    record = await read_record(redis, SID)
    assert record is not None and record.parts["msg_2/prt_3"] == polled[1]["parts"][1]

    cur = await db.execute("SELECT %s::jsonb::text", (dumps_jsonb(polled),))
    assert loads_jsonb((await cur.fetchone())[0]) == polled


def test_deeper_than_orjson_reads_is_not_json_whichever_parser_reads_it():
    for raw in (json.dumps(nested(DEEPEST + 1)), "[" * 5_000 + "]" * 5_000):  # the first: a lone surrogate's escape
        with pytest.raises(ValueError, match=TOO_DEEP):
            loads(raw)
    assert not too_deep(nested(DEEPEST)) and too_deep(nested(DEEPEST + 1))


@pytest.mark.parametrize("script", ["sessions", "poller", "gateway"])
def test_every_process_makes_room_for_it(script: str) -> None:
    module = {"sessions": "shared.cli", "poller": "poller.main", "gateway": "gateway.main"}[script]
    code = (
        f"import importlib, sys, shared.entrypoints as e; m = importlib.import_module({module!r});"
        f" m.main = lambda: print(sys.getrecursionlimit()); e.{script}()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert int(result.stdout) == FRAMES
