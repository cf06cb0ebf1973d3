"""SessionTracker inside a real replica: how it stops when the lease is lost."""

from __future__ import annotations

import pytest
import structlog

from shared import commands
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
    assert (worker.metrics.registry.get_sample_value("poller_leases_lost_total") or 0) >= 1
