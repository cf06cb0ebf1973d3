"""Redis lost a session while a replica held its lease: the backstop queues it again, and the owner of the lost run,
whatever its row recorded, can never write over the new run's owner (fencing survives the loss)."""

from __future__ import annotations

import json

import psycopg_pool
import pytest

from poller import reconcile
from poller.worker import Held
from shared import commands
from shared.ids import SessionId
from shared.models import prompt_entry
from shared.store import archive, keys
from shared.store.lease import Lease
from shared.store.live import read_record
from shared.store.lua import Scripts, StateChange
from shared.store.queueable import Carried
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pool(schema):
    async with psycopg_pool.AsyncConnectionPool(schema, min_size=1, max_size=2, open=False) as pool:
        yield pool


CHANGE = StateChange(
    fields={"status": "running"},
    messages={},
    parts={},
    removed_messages=[],
    removed_parts=[],
    event_state='{"status":"running"}',
)


async def test_a_lease_of_the_lost_run_is_never_the_new_runs(redis, db, opencode, pool):
    """The replica claimed the session and Redis lost it before the claim reached the row (the row's epoch is the
    job's before that claim). Was: the job queued again from the row took the same epoch on its next claim, so the
    same replica got the very token it held: its tracker of the lost run kept writing, fenced by nothing, beside the
    new run's (two trackers, one session, one replica: a prompt sent twice)."""
    await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO x")
    scripts = Scripts(redis)
    [lost] = await scripts.claim("replica-a", 60_000, 10)
    await redis.flushall()
    assert await reconcile.reconcile_once(redis, pool) == 1
    [new] = await scripts.claim("replica-a", 60_000, 10)
    assert new.token != lost.token and new.epoch > lost.epoch
    assert await scripts.apply(lost, CHANGE) == -1, "the lost run's owner wrote over the new run"
    assert await scripts.apply(new, CHANGE) > 0


async def test_the_epoch_queued_again_is_past_every_claim_the_lost_run_made(redis, db, opencode, pool):
    """Claims the row never heard of (handed back before their claim was recorded) moved the job's epoch on:
    none of those tokens comes back after the loss either."""
    sid = SessionId((await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO x"))["sessionId"])
    scripts = Scripts(redis)
    tokens = []
    for _ in range(5):
        [lease] = await scripts.claim("replica-a", 60_000, 10)
        tokens.append(lease.token)
        assert await scripts.release([lease]) == 1
    await redis.flushall()
    assert await reconcile.reconcile_once(redis, pool) == 1
    [new] = await scripts.claim("replica-a", 60_000, 10)
    assert new.token not in tokens and new.epoch > max(int(t.split(":")[0]) for t in tokens)
    record = await read_record(redis, sid)
    assert record is not None and record.state.status == "pending"
    assert json.loads(await redis.hget(keys.job(sid), "epoch")) == new.epoch


async def test_a_pending_session_no_replica_had_claimed_yet_runs_once_redis_lost_it(make_worker, redis, db, opencode):
    """Its row says pending and OpenCode has no message of it yet: the backstop queues it with its prompt, which the
    poller then delivers once, and the session ends as if nothing had happened."""
    sid = SessionId((await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO lost"))["sessionId"])
    await redis.flushall()
    await make_worker()

    async def archived():
        row = await archive.fetch(db, sid)
        return row if row is not None and row.status == "completed" else None

    row = await wait_for(archived, timeout=30, what="the session archived")
    users = [m for m in row.messages if m["info"]["role"] == "user"]
    assert len(users) == 1 and row.layer["seq"] > 1


async def test_a_replica_that_claims_again_a_session_it_held_stops_the_lost_runs_tracker(
    make_worker, redis, db, opencode, monkeypatch
):
    """Redis lost the session while this replica held it, and the backstop queued it again before the tracker of the
    lost run noticed (its next tick): the replica claims it anew. Was: the newer lease took the older's place in its
    table, so nothing stopped the older tracker, which wrote (fenced out) until it failed and, ending, took the
    session's entries in the event router and job board with it: the newer tracker got no event and waited on slow
    polls. (The lost run's lease stands in the replica's table as the worker starts: its first claim is the one.)"""
    sid = SessionId((await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO x"))["sessionId"])

    async def not_yet_renewed(self: Scripts, ttl_ms: int, leases: list[Lease]) -> list[bool]:
        return [True] * len(leases)  # the renewal that would find the lost lease gone has not come yet

    monkeypatch.setattr(Scripts, "renew", not_yet_renewed)
    worker = await make_worker(lease_ttl_s=30.0)
    older = Held(Lease(sid, "0:lost-run", 0), valid_until=float("inf"))
    worker.held[sid] = older  # before the worker's task first runs: nothing of it has yet

    async def claimed_again():
        newer = worker.held.get(sid)
        return newer if newer is not None and newer is not older else None

    newer = await wait_for(claimed_again, timeout=20, what="the session claimed again")
    assert older.scope.cancel_called and not newer.scope.cancel_called


async def test_a_rebuilt_session_carries_the_prompts_and_the_sending_mark_its_dropped_job_held(
    redis, db, opencode, pool
):
    """Redis went back and the session's job is dropped to be queued again from its row (poller/rewound.py). Was:
    a follow-up queued in the job whose record in the row had not committed yet was gone, and the prompt its owner
    was sending was sent again at once by the next owner (no `promptSending` to wait on): it could run twice."""
    sid = SessionId((await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO x"))["sessionId"])
    [lease] = await Scripts(redis).claim("replica-a", 60_000, 10)
    unrecorded = prompt_entry("msg_0000000000000unrecorded00", "ECHO the follow-up")
    await redis.rpush(keys.prompts(sid), unrecorded)
    await redis.hset(keys.job(sid), "promptSending", "msg_0000000000000unrecorded00")
    held = await Scripts(redis).drop(lease)
    assert held is not None
    sending, prompts = held
    assert await reconcile.requeue_gone(redis, pool, [sid], {sid: Carried(prompts, sending)}) == 1
    queued = [json.loads(entry)["messageID"] for entry in await redis.lrange(keys.prompts(sid), 0, -1)]
    assert queued.count("msg_0000000000000unrecorded00") == 1 and len(queued) == 2  # the row's prompt, then ours
    assert await redis.hget(keys.job(sid), "promptSending") == b"msg_0000000000000unrecorded00"
