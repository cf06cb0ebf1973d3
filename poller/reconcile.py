"""The PostgreSQL backstop: re-queue every pending/running row whose live state Redis no longer has."""

from __future__ import annotations

import psycopg_pool
import structlog
from redis.asyncio import Redis

from shared.commands import requeue_from_archive
from shared.ids import parse_session_id
from shared.store import archive, keys
from shared.store.connections import store_errors

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
    requeued = 0
    for row in orphans:
        if await requeue_from_archive(redis, row):
            requeued += 1
            log.warning(
                "session_requeued_from_archive", session_id=row.id, status=row.status, cancel=row.cancel_requested
            )
    return requeued
