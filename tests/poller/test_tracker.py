"""SessionTracker inside a real replica: how it stops when the lease is lost."""

from __future__ import annotations

import pytest
import structlog

from shared import commands
from shared.store import keys
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def test_a_lost_lease_is_logged_as_lease_lost_not_as_a_crash(make_worker, redis, db, opencode):
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="hello")
    sid = state["sessionId"]
    # a newer owner has written the row: the claim's PostgreSQL record is refused inside the tracker's task group
    await db.execute(
        "UPDATE opencode_sessions SET metadata = jsonb_set(metadata, '{sessionLayer,epoch}', '1000000') WHERE id = %s",
        (sid,),
    )
    with structlog.testing.capture_logs() as logs:
        worker = await make_worker()

        async def stopped() -> bool:
            return any(entry["event"] == "lease_lost" for entry in logs) and sid not in worker.held

        await wait_for(stopped, timeout=15, what="the tracker to stop on its lost lease")
    lost = [entry for entry in logs if entry["event"] == "lease_lost"]
    assert lost[0]["reason"] == "PostgreSQL holds a newer owner's epoch"
    assert [entry for entry in logs if entry["event"] == "tracker_crashed"] == []
    assert (worker.metrics.registry.get_sample_value("poller_leases_lost_total", {"server": "default"}) or 0) >= 1


async def test_a_lease_lost_by_the_trackers_own_account_is_handed_back_at_once(make_worker, redis, db, opencode):
    """PostgreSQL says a newer owner exists while Redis still names us: give the lease back now, not at its TTL."""
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="hello")
    sid = state["sessionId"]
    await db.execute(
        "UPDATE opencode_sessions SET metadata = jsonb_set(metadata, '{sessionLayer,epoch}', '1000000') WHERE id = %s",
        (sid,),
    )
    await make_worker(lease_ttl_s=60.0)
    first = await wait_for(lambda: redis.get(keys.lease(sid)), timeout=15, what="the first claim")

    async def handed_back() -> bool:
        # released, the session is due at once and this replica may claim it again (a higher epoch): either way
        # the first token is gone long before its 60 s TTL
        return await redis.get(keys.lease(sid)) != first

    await wait_for(handed_back, timeout=15, what="the lease handed back before its TTL")
