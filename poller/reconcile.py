"""The PostgreSQL backstop: re-queue every pending/running row whose live state Redis no longer has.

A pass walks all of those rows, a batch at a time in (started_at, id) order, so it reaches every one however many
Redis lost, and holds one batch at a time. Rows come from other backends too: one that cannot be queued is
logged and passed over, and the pass goes on. An outage of Redis or PostgreSQL ends the pass (Unavailable), for
the next interval to try again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager

import psycopg_pool
import structlog
from redis.asyncio import Redis
from redis.exceptions import LockNotOwnedError

from shared.commands import requeue_from_archive
from shared.errors import SessionLayerError, Unavailable
from shared.ids import SessionId, parse_session_id
from shared.models import dumps
from shared.store import keys, queueable, requests, unfinished
from shared.store.archive import ArchiveRow
from shared.store.connections import redis_now_ms, store_errors
from shared.store.lua import Scripts
from shared.store.unfinished import RowKey

log = structlog.get_logger(__name__)

BATCH = 500
LOCK_SHARE = 0.9  # of RECONCILE_INTERVAL_MS: the backstop's lock is gone before the next interval's pass
NOT_REQUEUED = "session_not_requeued"
ANSWER_NOT_REQUEUED = "answer_not_requeued"


async def lead_pass(
    redis: Redis, pool: psycopg_pool.AsyncConnectionPool, replica_id: str, interval_s: float
) -> int | None:
    """A pass, when this replica takes the backstop's lock (None: another replica holds it); how many sessions it
    queued again. The lock lives LOCK_SHARE of the interval, so one pass starts per interval across the replicas,
    and is extended before each page: a pass over a backlog that outlasts it is not joined by a second one. Was:
    the lock expired under a long pass, and every replica walked the same rows at once, as Redis recovered."""
    lock = redis.lock(keys.RECONCILE_LOCK, timeout=interval_s * LOCK_SHARE, blocking=False, thread_local=False)
    with store_errors("Redis"):
        if not await lock.acquire(token=replica_id):
            return None

    async def still_ours() -> bool:
        with store_errors("Redis"):
            try:
                return await lock.reacquire()
            except LockNotOwnedError:
                return False

    return await reconcile_once(redis, pool, still_ours=still_ours)


async def reconcile_once(
    redis: Redis, pool: psycopg_pool.AsyncConnectionPool, *, still_ours: Callable[[], Awaitable[bool]] | None = None
) -> int:
    """Walk every pending/running row once; returns how many sessions were queued again (a cancelled one still
    cancelled). `still_ours` is asked before each page after the first: False ends the pass there (the lock
    went to another replica, which walks from the start)."""
    requeued = 0
    after: RowKey | None = None
    while True:
        with store_errors("PostgreSQL"):
            async with pool.connection() as conn:
                batch = await unfinished.unfinished(conn, after, BATCH)
        requeued += await _reconcile_batch(redis, pool, batch)
        if len(batch) < BATCH:
            return requeued
        after = batch[-1]
        if still_ours is not None and not await still_ours():
            log.warning("backstop_lock_lost", requeued=requeued)
            return requeued


async def _reconcile_batch(redis: Redis, pool: psycopg_pool.AsyncConnectionPool, batch: list[RowKey]) -> int:
    """Queue again those of `batch` that have no job in Redis and are still unfinished when read again."""
    session_ids: list[SessionId] = []
    for key in batch:
        with _passed_over(key.id):
            session_ids.append(parse_session_id(key.id))
    if not session_ids:
        return 0
    with store_errors("Redis"):
        async with redis.pipeline(transaction=False) as pipe:
            for session_id in session_ids:
                pipe.exists(keys.job(session_id))
            live = await pipe.execute()
    gone = [session_id for session_id, exists in zip(session_ids, live, strict=True) if not exists]
    return await requeue_gone(redis, pool, gone) if gone else 0


async def requeue_gone(
    redis: Redis,
    pool: psycopg_pool.AsyncConnectionPool,
    gone: list[SessionId],
    carried: Mapping[str, queueable.Carried] | None = None,
) -> int:
    """Queue again, with the answers recorded for them, those of `gone` (sessions without a job in Redis) whose rows
    are still unfinished when read again; how many were. `carried`: what their dropped jobs held (rewound.py)."""
    requeued: list[str] = []
    orphans = await _orphans(pool, gone)
    now_ms = await redis_now_ms(redis) if orphans else 0
    for row in orphans:
        if await _requeue(redis, row, now_ms, (carried or {}).get(row.id)):
            requeued.append(row.id)
    if requeued:
        with _passed_over(*requeued, event=ANSWER_NOT_REQUEUED):
            await _hand_back_answers(redis, pool, requeued)
    return len(requeued)


async def _orphans(pool: psycopg_pool.AsyncConnectionPool, gone: list[SessionId]) -> list[ArchiveRow]:
    """The rows of `gone` still pending/running, read again now (`unfinished.still_unfinished` says why).

    A row PostgreSQL stores but we cannot decode (JSON nested deeper than the decoder goes) fails the whole read:
    the rows are then read one at a time, so only that one is passed over.
    """
    try:
        return await _still_unfinished(pool, gone)
    except Unavailable:
        raise
    except Exception:
        rows: list[ArchiveRow] = []
        for session_id in gone:
            with _passed_over(session_id):
                rows += await _still_unfinished(pool, [session_id])
        return rows


async def _still_unfinished(pool: psycopg_pool.AsyncConnectionPool, session_ids: list[SessionId]) -> list[ArchiveRow]:
    with store_errors("PostgreSQL"):
        async with pool.connection() as conn:
            return await unfinished.still_unfinished(conn, session_ids)


async def _requeue(redis: Redis, row: ArchiveRow, now_ms: int, carried: queueable.Carried | None = None) -> bool:
    """Queue one orphan, its seq and epoch past the lost run's; False (and a warning naming the session and why)
    when the row cannot be queued."""
    requeued = False
    with _passed_over(row.id):
        requeued = await requeue_from_archive(redis, queueable.past_lost_run(row, now_ms), carried)
    if requeued:
        log.warning("session_requeued_from_archive", session_id=row.id, status=row.status, cancel=row.cancel_requested)
    return requeued


@contextmanager
def _passed_over(*session_ids: str, event: str = NOT_REQUEUED, **fields: str) -> Iterator[None]:
    """A failure of these sessions' own rows is logged and swallowed, so the pass goes on; it is tried again next
    pass (nothing is recorded), and stays in the log every pass until the row is mended. An outage still ends
    the pass."""
    try:
        yield
    except Unavailable:
        raise
    except Exception as exc:
        if isinstance(exc, SessionLayerError):  # a row of the wrong shape: its message says it all
            reason, trace = exc.message, False
        else:  # anything else is a bug: show where
            reason, trace = f"{type(exc).__name__}: {exc}", True
        for session_id in session_ids:
            log.warning(event, session_id=session_id, reason=reason, exc_info=trace, **fields)


async def _hand_back_answers(redis: Redis, pool: psycopg_pool.AsyncConnectionPool, session_ids: list[str]) -> None:
    """Answers people gave that OpenCode had not taken when Redis lost the job travel with the new one."""
    with store_errors("PostgreSQL"):
        async with pool.connection() as conn:
            rows = await requests.undelivered(conn, session_ids)
    scripts = Scripts(redis)
    for row in rows:
        body = row.answer if isinstance(row.answer, dict) else {}
        with _passed_over(row.session_id, event=ANSWER_NOT_REQUEUED, request_id=row.id), store_errors("Redis"):
            await scripts.answer(parse_session_id(row.session_id), row.id, dumps({"kind": row.kind, **body}))
            log.warning("answer_requeued_from_archive", session_id=row.session_id, request_id=row.id)
