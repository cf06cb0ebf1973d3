"""The PostgreSQL backstop: re-queue every pending/running row whose live state Redis no longer has."""

from __future__ import annotations

import psycopg_pool
import structlog
from redis.asyncio import Redis

from shared.commands import requeue_from_archive
from shared.ids import parse_session_id
from shared.models import dumps
from shared.store import archive, keys, requests
from shared.store.connections import store_errors
from shared.store.lua import Scripts

log = structlog.get_logger(__name__)

BATCH = 500


async def reconcile_once(redis: Redis, pool: psycopg_pool.AsyncConnectionPool) -> int:
    """Returns how many sessions were queued again (a cancelled one still cancelled)."""
    with store_errors("PostgreSQL"):
        async with pool.connection() as conn:
            rows = await archive.unfinished(conn, BATCH)
    if not rows:
        return 0
    with store_errors("Redis"):
        async with redis.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.exists(keys.job(parse_session_id(row.id)))
            live = await pipe.execute()
    gone = [row.id for row, exists in zip(rows, live, strict=True) if not exists]
    if not gone:
        return 0
    with store_errors("PostgreSQL"):
        async with pool.connection() as conn:
            orphans = await archive.still_unfinished(conn, gone)
    requeued: list[str] = []
    for row in orphans:
        if await requeue_from_archive(redis, row):
            requeued.append(row.id)
            log.warning(
                "session_requeued_from_archive", session_id=row.id, status=row.status, cancel=row.cancel_requested
            )
    if requeued:
        await _hand_back_answers(redis, pool, requeued)
    return len(requeued)


async def _hand_back_answers(redis: Redis, pool: psycopg_pool.AsyncConnectionPool, session_ids: list[str]) -> None:
    """Answers people gave that OpenCode had not taken when Redis lost the job travel with the new one."""
    with store_errors("PostgreSQL"):
        async with pool.connection() as conn:
            rows = await requests.undelivered(conn, session_ids)
    scripts = Scripts(redis)
    for row in rows:
        body = row.answer if isinstance(row.answer, dict) else {}
        with store_errors("Redis"):
            await scripts.answer(parse_session_id(row.session_id), row.id, dumps({"kind": row.kind, **body}))
        log.warning("answer_requeued_from_archive", session_id=row.session_id, request_id=row.id)
