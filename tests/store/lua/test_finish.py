"""finish.lua: after the archive, the final event, then every live key is gone — unless a prompt arrived."""

from __future__ import annotations

import pytest

from shared.ids import TicketId
from shared.models import prompt_entry
from shared.store import keys
from shared.store.lease import Lease
from tests.store.lua.helpers import SID, SID2, enqueue

pytestmark = pytest.mark.anyio
TICKET = TicketId("T-1")


async def finish(scripts, lease, rev="0"):
    return await scripts.finish(lease, TICKET, prompts_rev=rev, event='{"type":"complete"}', index_event="{}")


async def test_finish_cleans_every_live_key(redis):
    scripts = await enqueue(redis)
    [lease] = await scripts.claim("r1", 10_000, 10)
    assert await finish(scripts, lease) == 2
    for key in (*keys.state_keys(SID), keys.job(SID), keys.prompts(SID), keys.lease(SID), keys.ticket_active(TICKET)):
        assert not await redis.exists(key), key
    assert await redis.zscore(keys.QUEUE, SID) is None
    assert await redis.zscore(keys.LIVE_INDEX, SID) is None


async def test_finish_keeps_a_ticket_pointer_that_moved_on(redis):
    scripts = await enqueue(redis)
    [lease] = await scripts.claim("r1", 10_000, 10)
    await redis.set(keys.ticket_active(TICKET), SID2)
    await finish(scripts, lease)
    assert await redis.get(keys.ticket_active(TICKET)) == SID2.encode()


async def test_finish_refuses_when_a_prompt_arrived_or_the_lease_is_stale(redis):
    scripts = await enqueue(redis)
    [lease] = await scripts.claim("r1", 10_000, 10)
    await scripts.send(SID, prompt_entry("msg_y", "follow-up"))
    assert await finish(scripts, lease, rev="0") == -2
    assert await redis.exists(keys.session(SID))
    assert await finish(scripts, Lease.from_token(SID, "7:zz"), rev="1") == -1
    assert await finish(scripts, lease, rev="1") == 2  # refusals bumped nothing
