"""claim.lua, renew.lua, release.lua: at most one owner, fenced tokens, and no live state touched."""

from __future__ import annotations

import pytest

from shared.clock import now_ms
from shared.ids import SessionId
from shared.store import keys, lua
from shared.store.lease import FairShare, Lease
from shared.store.lua import Renewed
from tests.store.lua.helpers import SID, SID2, enqueue

pytestmark = pytest.mark.anyio


async def test_claim_takes_each_due_job_once(redis):
    scripts = await enqueue(redis)
    await enqueue(redis, SID2, ticket=None)
    first = await scripts.claim("r1", 10_000, 10)
    assert sorted(c.session_id for c in first) == sorted([SID, SID2])
    assert all(c.token == "1:r1" for c in first)
    assert await scripts.claim("r2", 10_000, 10) == []  # leased: not due again before expiry
    assert await redis.get(keys.lease(SID)) == b"1:r1"


async def test_claim_respects_max_jobs(redis):
    scripts = await enqueue(redis)
    await enqueue(redis, SID2)
    assert len(await scripts.claim("r1", 10_000, 1)) == 1
    assert len(await scripts.claim("r1", 10_000, 0)) == 0


async def test_a_claim_takes_the_fair_share_among_live_replicas_but_never_less_than_the_least(redis):
    ids = [SessionId(f"ses_{i:026d}") for i in range(10)]
    for sid in ids:
        scripts = await enqueue(redis, sid, ticket=None)
    now = now_ms()
    await redis.zadd(keys.POLLERS, {"r1": now, "r2": now - 1_000, "dead": now - 60_000})

    def share(least: int, held: int) -> FairShare:
        return FairShare(least=least, held=held, live_since_ms=now - 3_000)

    assert len(await scripts.claim("r1", 10_000, 100, share=share(1, held=2))) == 3  # 10 jobs, 2 live: 5 each
    assert len(await scripts.claim("r1", 10_000, 100, share=share(1, held=5))) == 1  # its share reached: the least
    assert len(await scripts.claim("r2", 10_000, 2, share=share(1, held=0))) == 2  # never beyond max_jobs
    assert len(await scripts.claim("r2", 10_000, 100, share=share(1, held=2))) == 3
    await redis.zadd(keys.POLLERS, {"r2": now - 4_000})  # r2 dies: its jobs, once due, are r1's alone
    await redis.delete(*(keys.lease(sid) for sid in ids))
    await redis.zadd(keys.QUEUE, {sid: 0 for sid in ids})
    assert len(await scripts.claim("r1", 10_000, 100, share=share(1, held=4))) == 6


async def test_without_a_share_a_claim_takes_up_to_max_jobs(redis):
    for i in range(5):
        scripts = await enqueue(redis, SessionId(f"ses_{i:026d}"), ticket=None)
    await redis.zadd(keys.POLLERS, {f"r{i}": now_ms() for i in range(5)})  # five live replicas: a share of one
    assert len(await scripts.claim("r1", 10_000, 4)) == 4


async def test_a_large_claim_goes_in_chunks_that_count_what_the_earlier_ones_took(redis, monkeypatch):
    monkeypatch.setattr(lua, "LEASE_CHUNK", 2)
    for i in range(9):
        scripts = await enqueue(redis, SessionId(f"ses_{i:026d}"), ticket=None)
    now = now_ms()
    await redis.zadd(keys.POLLERS, {"r1": now, "r2": now})
    share = FairShare(least=1, held=0, live_since_ms=now - 3_000)
    first = await scripts.claim("r1", 10_000, 100, share=share)  # a share of 5: chunks of 2, 2, then 1
    assert len(first) == 5 and len({lease.session_id for lease in first}) == 5
    assert len(await scripts.claim("r2", 10_000, 3)) == 3  # without a share: max_jobs, in chunks of 2 and 1
    assert len(await scripts.claim("r2", 10_000, 100, share=FairShare(3, 3, now - 3_000))) == 1  # what is left


async def test_expired_lease_is_taken_over_with_a_newer_epoch(redis):
    scripts = await enqueue(redis)
    [lease] = await scripts.claim("r1", 10_000, 10)
    await redis.delete(keys.lease(SID))  # as if the TTL ran out
    await redis.zadd(keys.QUEUE, {SID: 0})
    [taken] = await scripts.claim("r2", 10_000, 10)
    assert taken.token == "2:r2"
    assert [r is not None for r in await scripts.renew(10_000, [lease, taken])] == [False, True]


async def test_claim_pushes_a_still_leased_job_to_its_expiry(redis):
    scripts = await enqueue(redis)
    await scripts.claim("r1", 60_000, 10)
    await redis.zadd(keys.QUEUE, {SID: 0})  # e.g. a clock-skewed score
    assert await scripts.claim("r2", 60_000, 10) == []
    assert await redis.zscore(keys.QUEUE, SID) > 0


async def test_claim_drops_orphaned_queue_entries(redis):
    scripts = await enqueue(redis)
    await redis.delete(keys.job(SID))
    assert await scripts.claim("r1", 10_000, 10) == []
    assert await redis.zscore(keys.QUEUE, SID) is None


async def test_renew_extends_and_release_makes_claimable_at_once(redis):
    scripts = await enqueue(redis)
    [lease] = await scripts.claim("r1", 1_000, 10)
    assert await scripts.renew(60_000, [lease]) == [Renewed(seq=1, prompts_rev=0)]  # how far Redis holds it
    assert await redis.pttl(keys.lease(SID)) > 30_000
    assert await scripts.release([Lease.from_token(SID, "9:other")]) == 0  # a stale token releases nothing
    assert await scripts.release([lease]) == 1
    assert await redis.get(keys.lease(SID)) is None
    [again] = await scripts.claim("r2", 10_000, 10)
    assert again.token == "2:r2"


async def test_lease_bookkeeping_never_touches_state(redis):
    scripts = await enqueue(redis)
    before = await redis.hgetall(keys.session(SID))
    [lease] = await scripts.claim("r1", 10_000, 10)
    await scripts.renew(10_000, [lease])
    await scripts.release([lease])
    assert await redis.hgetall(keys.session(SID)) == before


async def test_many_leases_are_renewed_and_released_in_calls_that_keep_their_order(redis, monkeypatch):
    """A replica's leases go to Redis a chunk per call (one script call for thousands held Redis for tens of ms):
    each flag still answers its own lease, a lost one in the middle included."""
    monkeypatch.setattr(lua, "LEASE_CHUNK", 2)
    sids = [SessionId(f"ses_{index:026d}") for index in range(5)]
    for sid in sids:
        scripts = await enqueue(redis, sid, ticket=None)
    leases = await scripts.claim("r1", 1_000, 10)
    assert len(leases) == 5
    lost = leases[2]
    await redis.set(keys.lease(lost.session_id), "2:r2")  # taken over meanwhile
    assert [r is not None for r in await scripts.renew(60_000, leases)] == [True, True, False, True, True]
    for lease in leases:
        ttl = await redis.pttl(keys.lease(lease.session_id))
        assert (ttl > 30_000) is (lease is not lost)
    assert await scripts.release(leases) == 4
    assert await redis.get(keys.lease(lost.session_id)) == b"2:r2"
    assert await scripts.renew(60_000, []) == [] and await scripts.release([]) == 0


async def test_renew_says_how_far_redis_holds_each_session_and_drop_is_fenced(redis):
    """renew.lua reports each renewed session's seq and promptsRev (poller/rewound.py compares them with what its
    owner wrote and read); drop.lua removes a session only for the lease that holds it."""
    scripts = await enqueue(redis)
    [lease] = await scripts.claim("r1", 60_000, 10)
    await redis.hset(keys.session(SID), "seq", 41)
    await redis.hset(keys.job(SID), "promptsRev", 7)
    assert await scripts.renew(60_000, [lease]) == [Renewed(seq=41, prompts_rev=7)]
    await redis.hdel(keys.job(SID), "promptsRev")
    assert await scripts.renew(60_000, [lease]) == [Renewed(seq=41, prompts_rev=None)]

    assert await scripts.drop(Lease.from_token(SID, "9:other")) is None  # a stale token drops nothing
    assert await redis.exists(keys.session(SID), keys.job(SID)) == 2
    await redis.hset(keys.job(SID), "promptSending", "msg_sending")
    queued = [entry.decode() for entry in await redis.lrange(keys.prompts(SID), 0, -1)]
    assert await scripts.drop(lease) == ("msg_sending", queued)  # what the requeue must carry
    live = [keys.lease(SID), *keys.state_keys(SID), keys.job(SID), keys.prompts(SID)]
    assert await redis.exists(*live) == 0
    assert await redis.zscore(keys.QUEUE, SID) is None and await redis.zscore(keys.LIVE_INDEX, SID) is None
    assert await redis.hget(keys.JOB_REVS, SID) is None
