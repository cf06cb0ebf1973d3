"""enqueue.lua, send.lua, cancel.lua, pop_prompt.lua: the job, prompts and pending state in one step."""

from __future__ import annotations

import pytest

from shared.models import prompt_entry
from shared.store import keys
from shared.store.lease import Lease
from shared.store.lua import Scripts
from tests.store.lua.helpers import SID, enqueue

pytestmark = pytest.mark.anyio


async def test_enqueue_records_everything_atomically(redis):
    await enqueue(redis)
    assert await redis.hget(keys.session(SID), "status") == b"pending"
    assert await redis.hget(keys.session(SID), "seq") == b"1"
    assert await redis.get(keys.ticket_active("T-1")) == SID.encode()
    assert await redis.zscore(keys.QUEUE, SID) is not None
    assert await redis.zscore(keys.LIVE_INDEX, SID) == 1000
    assert await redis.llen(keys.prompts(SID)) == 1
    assert await redis.hget(keys.job(SID), "promptsRev") == b"0"


async def test_enqueue_on_a_live_job_appends_or_skips(redis):
    scripts = await enqueue(redis)
    kwargs = {"job": {}, "state": {}, "prompts": [prompt_entry("msg_x", "again")], "index_event": "{}"}
    assert await scripts.enqueue(SID, None, if_exists="skip", **kwargs) == -1
    assert await redis.llen(keys.prompts(SID)) == 1
    assert await scripts.enqueue(SID, None, **kwargs) == 0
    assert await redis.llen(keys.prompts(SID)) == 2
    assert await redis.hget(keys.job(SID), "promptsRev") == b"1"


async def test_send_and_cancel_need_a_live_job(redis):
    scripts = Scripts(redis)
    assert await scripts.send(SID, prompt_entry("msg_x", "hi")) is False
    assert await scripts.cancel(SID) is False
    await enqueue(redis)
    assert await scripts.send(SID, prompt_entry("msg_x", "hi")) is True
    assert await scripts.cancel(SID) is True
    assert await redis.hmget(keys.job(SID), ["cancel", "promptsRev"]) == [b"1", b"2"]


async def test_pop_prompt_is_fenced_and_checks_the_head(redis):
    scripts = await enqueue(redis, prompts=2)
    [lease] = await scripts.claim("r1", 10_000, 10)
    head = (await redis.lindex(keys.prompts(SID), 0)).decode()
    assert await scripts.pop_prompt(Lease.from_token(SID, "0:old"), head) == -1
    assert await scripts.pop_prompt(lease, "not the head") == 0
    assert await scripts.pop_prompt(lease, head) == 1
    assert await redis.llen(keys.prompts(SID)) == 1


async def test_a_revival_appended_to_a_job_another_revival_made_brings_its_epoch_and_cancel(redis):
    """Redis lost the session; the backstop queued it from the row it read, and a `send` (or `cancel`) that read the
    row later, and floored its epoch higher into it, appends to that job. Was: the job kept the backstop's epoch,
    and every claim was refused by PostgreSQL (the row held a newer one) until claims had counted up to it,
    hundreds of cycles; a cancel so appended was lost though `cancel` had answered "requested"."""
    scripts = await enqueue(redis)
    await redis.hset(keys.job(SID), "epoch", 1_800_000_000_000)
    later = {"sessionId": SID, "epoch": "1800000000300", "cancel": "1"}
    kwargs = {"state": {}, "prompts": [prompt_entry("msg_x", "again")], "index_event": "{}"}
    assert await scripts.enqueue(SID, None, job=later, **kwargs) == 0
    assert await redis.hmget(keys.job(SID), ["epoch", "cancel"]) == [b"1800000000300", b"1"]
    earlier = {"sessionId": SID, "epoch": "1800000000100", "cancel": "0"}
    assert await scripts.enqueue(SID, None, job=earlier, **kwargs) == 0
    assert await redis.hmget(keys.job(SID), ["epoch", "cancel"]) == [b"1800000000300", b"1"]  # never lowered
    [lease] = await scripts.claim("r1", 10_000, 10)
    assert lease.epoch == 1_800_000_000_301
