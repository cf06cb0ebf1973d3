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
