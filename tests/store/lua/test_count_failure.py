"""count_failure.lua: a session's failed attempts add up in its job across owners; a stale token counts nothing."""

from __future__ import annotations

import pytest

from shared.store import keys
from shared.store.lease import Lease
from tests.store.lua.helpers import SID, enqueue

pytestmark = pytest.mark.anyio

HOUR = 3_600_000


async def test_failures_add_up_across_owners_and_keep_the_last_cause(redis):
    scripts = await enqueue(redis)
    [first] = await scripts.claim("r1", 10_000, 10)
    assert await scripts.count_failure(first, "KeyError: 'id'", window_ms=HOUR) == 1
    await scripts.release([first])
    [second] = await scripts.claim("r2", 10_000, 10)
    before = await redis_ms(redis)
    assert await scripts.count_failure(second, "DataError: boom", window_ms=HOUR) == 2
    failures, cause, at = await redis.hmget(keys.job(SID), ["failures", "lastFailure", "lastFailureAt"])
    assert (failures, cause) == (b"2", b"DataError: boom")
    assert before <= int(at) <= await redis_ms(redis)  # stamped by Redis's clock, the one every replica shares


async def test_a_stale_token_or_a_finished_job_counts_nothing(redis):
    scripts = await enqueue(redis)
    [lease] = await scripts.claim("r1", 10_000, 10)
    stale = Lease(SID, f"{lease.epoch - 1}:r0", lease.epoch - 1)
    assert await scripts.count_failure(stale, "x", window_ms=HOUR) == -1
    await redis.delete(keys.job(SID))
    assert await scripts.count_failure(lease, "x", window_ms=HOUR) == -1
    assert not await redis.exists(keys.job(SID))  # no stray job hash for the claim loop to find


async def test_a_failure_long_after_the_last_counts_from_one_again(redis):
    """Rare failures of a long-lived session do not add up; failures in a row, within the window, do."""
    scripts = await enqueue(redis)
    [lease] = await scripts.claim("r1", 10_000, 10)
    assert await scripts.count_failure(lease, "a", window_ms=HOUR) == 1
    await redis.hset(keys.job(SID), "lastFailureAt", await redis_ms(redis) - HOUR + 60_000)  # within the hour
    assert await scripts.count_failure(lease, "b", window_ms=HOUR) == 2
    await redis.hset(keys.job(SID), "lastFailureAt", await redis_ms(redis) - HOUR - 1)  # past it
    assert await scripts.count_failure(lease, "c", window_ms=HOUR) == 1
    assert await redis.hmget(keys.job(SID), ["failures", "lastFailure"]) == [b"1", b"c"]


async def redis_ms(redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000
