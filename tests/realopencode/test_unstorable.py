"""A NUL byte in a tool's output, from the real `opencode serve`: what OpenCode returns, archived exactly."""

from __future__ import annotations

from typing import Any

import pytest

from shared import commands
from shared.ids import SessionId
from shared.opencode.client import OpenCodeClient
from shared.sessions import get_session
from shared.store import archive
from tests.helpers import wait_for
from tests.realopencode.harness import RealOpenCode

pytestmark = [pytest.mark.anyio, pytest.mark.realopencode]


async def test_a_nul_in_a_bash_output_is_archived_as_opencode_returns_it(
    real_opencode: RealOpenCode, make_worker: Any, redis: Any, db: Any
) -> None:
    await make_worker(opencode_url=real_opencode.url, poll_interval_s=0.2)
    async with OpenCodeClient(real_opencode.url) as opencode:
        state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="TOOL NULBYTE please")
        sid = SessionId(state["sessionId"])

        async def final() -> archive.ArchiveRow | None:
            row = await archive.fetch(db, sid)
            return row if row is not None and not row.unfinished else None

        row = await wait_for(final, timeout=90, what="the archive")
        server_messages = await opencode.messages(sid)
    assert (row.status, row.error_message) == ("completed", None)
    assert row.messages == server_messages  # nothing dropped or changed on the way
    (tool,) = [p for m in row.messages for p in m["parts"] if p["type"] == "tool"]
    # OpenCode keeps the NUL byte: the bash output it returns holds U+0000 between the two words
    assert tool["state"]["output"].startswith("before\x00after")
    assert (await get_session(redis, db, sid))["messages"] == server_messages
