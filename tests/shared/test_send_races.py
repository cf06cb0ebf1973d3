"""Follow-ups racing each other to an archived session: every prompt ends in the row, where the backstop finds it."""

from __future__ import annotations

import json
from typing import Any

import anyio
import psycopg
import pytest
from psycopg.types.json import Jsonb

from shared import commands
from shared.ids import SessionId
from shared.store import archive, keys
from shared.store.archive import LAYER_KEY
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def waiting_on_locks(db: Any) -> int:
    cur = await db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    return int((await cur.fetchone())[0])


async def test_two_follow_ups_reviving_one_session_at_once_are_both_recorded(redis, db, schema):
    """Two `send`s find no live job and both revive the archived row. Was: each wrote the row's prompts as it had
    read them plus its own, so the later write dropped the earlier's prompt: queued in Redis, missing from the
    row, lost for good if Redis lost its data before the owner recorded it. The row is now read FOR UPDATE: the
    second revival reads what the first wrote."""
    sid = SessionId("ses_111111111111BBBBBBBBBBBBRC")
    layer = {"title": "old", "prompts": [{"messageID": "msg_0", "text": "first"}], "epoch": 3}
    await db.execute(
        "INSERT INTO opencode_sessions (id, session_type, status, messages, metadata, completed_at)"
        " VALUES (%s, 'chat', 'completed', '[]', %s, now())",
        (sid, Jsonb({LAYER_KEY: layer})),
    )
    sent: list[str] = []
    async with await psycopg.AsyncConnection.connect(schema) as blocker:
        # Writes to the table wait behind this lock, reads (also FOR UPDATE) do not: both sends read, then wait.
        await blocker.execute("LOCK TABLE opencode_sessions IN SHARE MODE")
        async with anyio.create_task_group() as tg:
            for text in ("ECHO one", "ECHO two"):
                tg.start_soon(_send, schema, redis, sid, text, sent)
            await wait_for(lambda: _two_waiting(db), timeout=20)
            await blocker.commit()
    row = await archive.fetch(db, sid)
    assert row is not None and row.status == "pending"
    assert sorted(p["messageID"] for p in row.prompts) == sorted(["msg_0", *sent])
    assert {p["text"] for p in row.prompts} == {"first", "ECHO one", "ECHO two"}
    queued = [json.loads(raw)["messageID"] for raw in await redis.lrange(keys.prompts(sid), 0, -1)]
    assert queued == [p["messageID"] for p in row.prompts[1:]]  # both queued in Redis too, in the row's order


async def _two_waiting(db: Any) -> bool:
    return await waiting_on_locks(db) >= 2


async def _send(url: str, redis: Any, sid: SessionId, text: str, sent: list[str]) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        sent.append(await commands.send(redis, conn, sid, text))
