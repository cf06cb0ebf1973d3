"""A 404 in the middle of a run, on a server whose URL the live replicas disagree on: the tracker hands the session
back instead of ending it (poller/server_urls.py; the tracker's side is `TrackerDeps.hands_back`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from shared import commands
from shared.config import ServerConfig
from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.opencode.client import OpenCodeClient
from shared.opencode.servers import OpenCodeServers
from shared.store import archive, keys
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

HOLDER, OTHER = "replica-holder", "replica-other"


@pytest.fixture
def slow_simulator() -> Iterator[str]:
    """The server the session runs on: a SLOW run lasts long enough to lose the session mid-run."""
    with serve_in_thread(create_simulator(1.0, retry_delays=(0.2, 0.2))) as url:
        yield url


async def final_row(db: Any, sid: str) -> Any:
    row = await archive.fetch(db, sid)
    return row if row is not None and not row.unfinished else None


async def test_a_404_mid_run_on_a_disputed_server_hands_the_session_back(
    make_worker, redis, db, simulator_url, slow_simulator
):
    """The replica that runs a session loses it at its URL (404) while another live replica gives the server
    another URL. Was: ended at once in `error` ("OpenCode no longer has this session"). Now it is handed back,
    uncounted, while the replicas disagree (which of them has the right URL is for the operator to say), for up to
    OPENCODE_RETRY_DEADLINE_MS: a session gone from every server then ends (was: handed round for ever)."""
    here = (ServerConfig("default", simulator_url), ServerConfig("repo2", slow_simulator))
    deadline = {"opencode_retry_deadline_s": 4.0}
    holder = await make_worker(opencode_url=simulator_url, opencode_servers=here, replica_id=HOLDER, **deadline)
    placed = OpenCodeServers(here)
    try:
        state = await commands.enqueue(redis, db, placed, session_type="ask", prompt="SLOW TOOL x", server="repo2")
    finally:
        await placed.aclose()
    sid = state["sessionId"]

    async def held() -> bool:
        raw = await redis.hget(keys.poller(HOLDER), "sessions")
        return raw is not None and sid in json.loads(raw)

    await wait_for(held, timeout=20, what="the holder runs the session")
    elsewhere = (ServerConfig("default", simulator_url), ServerConfig("repo2", simulator_url))
    await make_worker(opencode_url=simulator_url, opencode_servers=elsewhere, replica_id=OTHER, **deadline)

    async def disputed() -> bool:
        return holder.urls.disputed("repo2")

    await wait_for(disputed, timeout=20, what="the holder sees the other replica's URL for repo2")
    epoch = int(await redis.hget(keys.job(sid), "epoch"))
    async with OpenCodeClient(slow_simulator, timeout_s=5) as opencode:
        assert await opencode.delete_session(sid)

    async def handed_back_thrice() -> bool:
        row = await final_row(db, sid)
        assert row is None, f"the session was ended: {row.status} {row.error_message}"
        now = await redis.hget(keys.job(sid), "epoch")
        return now is not None and int(now) >= epoch + 3

    await wait_for(handed_back_thrice, timeout=30, what="the session handed back, three times, not ended")
    assert await redis.hget(keys.job(sid), "failures") in (None, b"0")
    row = await wait_for(lambda: final_row(db, sid), timeout=30, what="the session ended, past the deadline")
    assert row.status == "error" and "OpenCode no longer has this session" in row.error_message
