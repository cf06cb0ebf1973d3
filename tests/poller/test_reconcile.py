"""The PostgreSQL backstop re-queues what Redis lost, and never a session that ended while it looked."""

from __future__ import annotations

import json
from typing import Any

import psycopg_pool
import pytest
import structlog
from psycopg.types.json import Jsonb

from poller import reconcile
from poller import worker as worker_module
from shared import commands
from shared.ids import SessionId, new_message_id
from shared.store import archive, keys, unfinished
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

SID = SessionId("ses_backstop0000000000000001")
LAYER = {"prompts": [{"messageID": "msg_a", "text": "hi"}], "epoch": 3}
NOT_REQUEUED = "session_not_requeued"


def sid(n: int) -> SessionId:
    return SessionId(f"ses_backstop{n:016d}")


async def insert_row(
    db,
    session_id: str,
    *,
    age_s: float = 0,
    ticket_id: str | None = "T-1",
    status: str = "running",
    messages: Any = None,
    metadata: Any = None,
    metadata_json: str | None = None,
    started_at: str | None = None,
) -> None:
    """A row as any backend could write it: `metadata` (default: our layer) or raw `metadata_json` text; started
    `age_s` ago, or at `started_at` (a timestamp's text)."""
    if metadata_json is None:
        metadata_json = json.dumps({"sessionLayer": LAYER} if metadata is None else metadata)
    await db.execute(
        "INSERT INTO opencode_sessions (id, ticket_id, session_type, status, messages, metadata, started_at)"
        " VALUES (%s, %s, 'ask', %s, %s, %s::jsonb, coalesce(%s::timestamp, now() - make_interval(secs => %s)))",
        (session_id, ticket_id, status, Jsonb([] if messages is None else messages), metadata_json, started_at, age_s),
    )


async def running_row(db) -> archive.ArchiveRow:
    await insert_row(db, SID)
    row = await archive.fetch(db, SID)
    assert row is not None
    return row


async def jobs(redis, session_ids) -> int:
    """How many of the sessions have a job in Redis."""
    return int(await redis.exists(*[keys.job(s) for s in session_ids]))


@pytest.fixture
async def pool(schema):
    async with psycopg_pool.AsyncConnectionPool(schema, min_size=1, max_size=2, open=False) as pool:
        yield pool


async def test_a_running_row_without_live_state_is_queued_again(redis, db, pool):
    await running_row(db)
    assert await reconcile.reconcile_once(redis, pool) == 1
    assert await redis.exists(keys.job(SID))
    assert await reconcile.reconcile_once(redis, pool) == 0, "a live job is left alone"


async def test_a_session_archived_between_the_two_reads_is_not_run_again(redis, db, pool, monkeypatch):
    """The owner commits the archive, then deletes the job: the backstop's first read can predate both."""
    await running_row(db)
    stale = await unfinished.unfinished(db, None, reconcile.BATCH)  # read before the archive committed
    await db.execute("UPDATE opencode_sessions SET status = 'completed', completed_at = now() WHERE id = %s", (SID,))

    async def first_read(conn, after, limit):
        return stale if after is None else []

    monkeypatch.setattr(reconcile.unfinished, "unfinished", first_read)
    assert await reconcile.reconcile_once(redis, pool) == 0
    assert not await redis.exists(keys.job(SID))


async def test_one_pass_requeues_every_orphan_however_many_batches_they_take(redis, db, pool):
    """Redis lost more sessions than one batch: the first pass walks past the oldest BATCH rows (all started in the
    same instant, so the walk's order rests on the id alone), and the next finds nothing left to do."""
    count = reconcile.BATCH + 100
    await db.execute(
        "INSERT INTO opencode_sessions (id, ticket_id, session_type, status, messages, metadata, started_at)"
        " SELECT 'ses_backstop' || lpad(n::text, 16, '0'), 'T-1', 'ask', 'running', '[]', %s, now()"
        " FROM generate_series(1, %s) AS n",
        (Jsonb({"sessionLayer": LAYER}), count),
    )
    ids = [sid(n) for n in range(1, count + 1)]
    assert await reconcile.reconcile_once(redis, pool) == count
    assert await jobs(redis, ids) == count
    assert await reconcile.reconcile_once(redis, pool) == 0


async def test_the_walk_reads_a_batch_at_a_time_and_skips_live_sessions(redis, db, pool, monkeypatch):
    """Batches of 4 over rows whose start times tie across batch boundaries, with live ones among them: each
    read holds at most a batch, and every orphan is queued once, in one pass."""
    monkeypatch.setattr(reconcile, "BATCH", 4)
    ids = [sid(n) for n in range(1, 24)]
    for n, session_id in enumerate(ids):
        await insert_row(db, session_id, age_s=float(n // 3))  # three rows per start time
    live = ids[1::5]
    for session_id in live:
        await redis.hset(keys.job(session_id), "sessionId", session_id)
    reads: list[int] = []
    real = reconcile.unfinished.unfinished

    async def counted(conn, *args):
        rows = await real(conn, *args)
        reads.append(len(rows))
        return rows

    monkeypatch.setattr(reconcile.unfinished, "unfinished", counted)
    assert await reconcile.reconcile_once(redis, pool) == len(ids) - len(live)
    assert await jobs(redis, ids) == len(ids)
    assert reads and max(reads) <= 4 and sum(reads) == len(ids)


async def test_start_times_python_cannot_hold_neither_stop_the_walk_nor_hide_a_row(redis, db, pool, monkeypatch):
    """PostgreSQL keeps times Python's datetime cannot ('-infinity', BC years, past 9999): the walk pages by
    PostgreSQL's own order of them, so a page at a time every row is reached, and each is queued again, its start
    read as the nearest time Python holds (shared.store.times; was: passed over, the session stranded)."""
    monkeypatch.setattr(reconcile, "BATCH", 1)
    unholdable = {sid(1): "-infinity", sid(2): "0100-01-01 BC", sid(3): "infinity", sid(6): "20000-01-01"}
    holdable = {sid(4): "0044-01-01", sid(5): "2024-01-01"}
    for session_id, started_at in {**unholdable, **holdable}.items():
        await insert_row(db, session_id, started_at=started_at)
    with structlog.testing.capture_logs() as logs:
        assert await reconcile.reconcile_once(redis, pool) == len(unholdable) + len(holdable)
    assert await jobs(redis, {**unholdable, **holdable}) == len(unholdable) + len(holdable)
    assert not [entry for entry in logs if entry["event"] == NOT_REQUEUED]


DEEP = "[" * 5000 + "]" * 5000  # a valid jsonb value, nested past what Python's JSON decoder takes

MALFORMED: dict[str, dict[str, Any]] = {
    "ticket id the ids refuse": {"ticket_id": "T 42"},
    "epoch not an integer": {"metadata": {"sessionLayer": {**LAYER, "epoch": "x"}}},
    "epoch a fraction": {"metadata": {"sessionLayer": {**LAYER, "epoch": 1.5}}},
    "epoch a boolean": {"metadata": {"sessionLayer": {**LAYER, "epoch": True}}},
    "metadata an array": {"metadata": [{"sessionLayer": LAYER}]},
    "metadata a string": {"metadata": "sessionLayer"},
    "session layer not an object": {"metadata": {"sessionLayer": [LAYER]}},
    "prompts not a list": {"metadata": {"sessionLayer": {**LAYER, "prompts": "hi"}}},
    "prompts an object": {"metadata": {"sessionLayer": {**LAYER, "prompts": {"messageID": "msg_a", "text": "hi"}}}},
    "prompt without text": {"metadata": {"sessionLayer": {**LAYER, "prompts": [{"messageID": "msg_a"}]}}},
    "prompt text not a string": {
        "metadata": {"sessionLayer": {**LAYER, "prompts": [{"messageID": "msg_a", "text": ["hi"]}]}}
    },
    "title not a string": {"metadata": {"sessionLayer": {**LAYER, "title": {"text": "t"}}}},
    "messages an object": {"messages": {"info": {"id": "msg_a"}}},
    "message without an info id": {"messages": [{"info": {}, "parts": []}]},
    "parts not a list": {"messages": [{"info": {"id": "msg_a"}, "parts": {"id": "prt_a"}}]},
    "part without ids": {"messages": [{"info": {"id": "msg_a"}, "parts": [{"type": "text"}]}]},
    "metadata nested too deep to read": {"metadata_json": '{"deep": ' + DEEP + "}"},
}


@pytest.mark.parametrize("fields", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_row_that_cannot_be_queued_is_skipped_and_the_rest_are_queued(redis, db, pool, fields):
    """Rows come from other backends too: one the backstop cannot queue is logged and passed over, every pass,
    while the rows behind it (a NULL metadata and a numeric-string epoch are fine) are queued as usual."""
    bad = sid(1)
    await insert_row(db, bad, age_s=60, **fields)
    good = [sid(2), sid(3), sid(4)]
    await insert_row(db, good[0], age_s=30)
    await insert_row(db, good[1], age_s=20, metadata_json="null", ticket_id=None)
    await insert_row(db, good[2], age_s=10, metadata={"sessionLayer": {**LAYER, "epoch": "7"}})
    with structlog.testing.capture_logs() as logs:
        assert await reconcile.reconcile_once(redis, pool) == len(good)
        assert await reconcile.reconcile_once(redis, pool) == 0, "the bad row is passed over again, nothing more"
    assert await jobs(redis, good) == len(good)
    assert not await redis.exists(keys.job(bad))
    skipped = [entry for entry in logs if entry["event"] == NOT_REQUEUED]
    assert [entry["session_id"] for entry in skipped] == [bad, bad]
    assert all(entry["log_level"] == "warning" and entry["reason"] for entry in skipped)


async def test_a_row_whose_id_is_not_a_session_id_is_skipped(redis, db, pool):
    await insert_row(db, "not a session id", age_s=60)
    await insert_row(db, sid(2))
    with structlog.testing.capture_logs() as logs:
        assert await reconcile.reconcile_once(redis, pool) == 1
    assert await redis.exists(keys.job(sid(2)))
    skipped = [entry for entry in logs if entry["event"] == NOT_REQUEUED]
    assert [entry["session_id"] for entry in skipped] == ["not a session id"]
    assert "invalid session id" in skipped[0]["reason"]


async def test_the_pollers_backstop_outlives_rows_it_cannot_queue_and_its_own_crashes(
    make_worker, redis, db, opencode, monkeypatch
):
    """A malformed row used to end the poller (every replica, in turn, as each took the lock); an unexpected
    error in a pass must not end it either: the next pass comes, and a session written by another backend
    whose Redis step was lost is queued and runs to the end."""
    await insert_row(db, sid(1), age_s=60, metadata={"sessionLayer": {**LAYER, "epoch": "x"}})
    await insert_row(db, sid(2), age_s=50, ticket_id="T 42")
    session = await opencode.create_session(title="backstop")
    prompt = {"messageID": new_message_id(), "text": "ECHO from the archive"}
    await insert_row(db, session["id"], status="pending", metadata={"sessionLayer": {"prompts": [prompt], "epoch": 0}})
    passes = 0
    real = worker_module.lead_pass

    async def crashes_once(*args):
        nonlocal passes
        passes += 1
        if passes == 1:
            raise RuntimeError("a bug in the pass")
        return await real(*args)

    monkeypatch.setattr(worker_module, "lead_pass", crashes_once)

    async def ended():
        cur = await db.execute("SELECT status FROM opencode_sessions WHERE id = %s", (session["id"],))
        row = await cur.fetchone()
        return row[0] if row[0] not in ("pending", "running") else None

    with structlog.testing.capture_logs() as logs:
        await make_worker()
        assert await wait_for(ended, timeout=30, what="the re-queued session to be archived") == "completed"
        await wait_for(lambda: _async(passes >= 3), timeout=30, what="a pass after the one that queued the session")
    assert [e for e in logs if e["event"] == "reconcile_crashed"], "the crash is logged"
    skipped = {entry["session_id"] for entry in logs if entry["event"] == NOT_REQUEUED}
    assert skipped == {sid(1), sid(2)}
    assert not await redis.exists(keys.job(sid(1)), keys.job(sid(2)))


async def _async(value):
    return value


async def test_a_follow_up_to_a_live_session_survives_redis_losing_the_job_before_its_owner_records_it(redis, db, pool):
    """`send` records the prompt in the row as it queues it. Was: in Redis alone until the owner's next claim
    record (one tick; as long as PostgreSQL was down or no poller ran); a Redis that lost its data meanwhile lost
    an acknowledged prompt, and the backstop revived the session without it."""
    await running_row(db)
    assert await reconcile.reconcile_once(redis, pool) == 1  # live, and no poller owns it
    message_id = await commands.send(redis, db, SID, "the follow-up")
    row = await archive.fetch(db, SID)
    assert row is not None and row.prompts == [*LAYER["prompts"], {"messageID": message_id, "text": "the follow-up"}]

    await redis.flushdb()  # Redis lost its data before any owner recorded the prompt
    assert await reconcile.reconcile_once(redis, pool) == 1
    queued = [json.loads(entry)["messageID"] for entry in await redis.lrange(keys.prompts(SID), 0, -1)]
    assert queued == ["msg_a", message_id]


async def test_a_follow_up_leaves_a_row_of_another_shape_as_it_is(redis, db, pool):
    """A row whose `sessionLayer` another backend wrote as no object cannot take the prompt (jsonb_set would fail):
    the prompt is queued all the same, and the row is not touched."""
    await running_row(db)
    assert await reconcile.reconcile_once(redis, pool) == 1
    await db.execute("UPDATE opencode_sessions SET metadata = '{\"sessionLayer\": [1]}' WHERE id = %s", (SID,))
    message_id = await commands.send(redis, db, SID, "the follow-up")
    assert message_id in {json.loads(e)["messageID"] for e in await redis.lrange(keys.prompts(SID), 0, -1)}
    cur = await db.execute("SELECT metadata FROM opencode_sessions WHERE id = %s", (SID,))
    assert (await cur.fetchone())[0] == {"sessionLayer": [1]}


async def _orphans_in_pages(db, monkeypatch, pages: int) -> list[SessionId]:
    monkeypatch.setattr(reconcile, "BATCH", 4)
    ids = [sid(n) for n in range(1, 4 * pages + 1)]
    for n, session_id in enumerate(ids):
        await insert_row(db, session_id, age_s=float(len(ids) - n))
    return ids


async def test_a_pass_keeps_the_lock_page_after_page_and_no_other_replica_joins_it(redis, db, pool, monkeypatch):
    """Was: the lock lived 0.9 of the interval from the pass's start, and a pass over a larger backlog was joined
    by every replica as the lock expired under it (each walking the same rows). Each page now extends it."""
    ids = await _orphans_in_pages(db, monkeypatch, pages=3)
    real = reconcile.unfinished.unfinished
    seen: list[tuple[int, Any]] = []

    async def meanwhile(conn, after, limit):
        if after is not None:  # a later page: the lock was extended, and it keeps another replica out
            seen.append((await redis.pttl(keys.RECONCILE_LOCK), await reconcile.lead_pass(redis, pool, "b", 100.0)))
            await redis.pexpire(keys.RECONCILE_LOCK, 5_000)  # most of its life gone, as under a long pass
        return await real(conn, after, limit)

    monkeypatch.setattr(reconcile.unfinished, "unfinished", meanwhile)
    assert await reconcile.lead_pass(redis, pool, "a", 100.0) == len(ids)
    assert len(seen) == 3 and all(ttl > 80_000 and other is None for ttl, other in seen)
    assert await redis.get(keys.RECONCILE_LOCK) == b"a"


async def test_a_pass_whose_lock_went_to_another_replica_stops_and_the_next_pass_walks_the_rest(
    redis, db, pool, monkeypatch
):
    ids = await _orphans_in_pages(db, monkeypatch, pages=3)
    real = reconcile.unfinished.unfinished

    async def taken_at_the_second_page(conn, after, limit):
        if after is not None:
            await redis.set(keys.RECONCILE_LOCK, "b")  # the lock expired under the pass, and b took it
        return await real(conn, after, limit)

    monkeypatch.setattr(reconcile.unfinished, "unfinished", taken_at_the_second_page)
    with structlog.testing.capture_logs() as logs:
        assert await reconcile.lead_pass(redis, pool, "a", 100.0) == 8  # the page it had read is still queued
    assert [e["requeued"] for e in logs if e["event"] == "backstop_lock_lost"] == [8]
    assert await jobs(redis, ids) == 8
    assert await reconcile.lead_pass(redis, pool, "a", 100.0) is None, "b holds the lock"
    monkeypatch.setattr(reconcile.unfinished, "unfinished", real)
    await redis.delete(keys.RECONCILE_LOCK)
    assert await reconcile.lead_pass(redis, pool, "b", 100.0) == 4
    assert await jobs(redis, ids) == len(ids)
