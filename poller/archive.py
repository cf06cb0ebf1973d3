"""The owner's writes to its session's row, each fenced by the lease epoch recorded in the row's metadata.

The row is written when a poller claims a session (status `running`, the PostgreSQL backstop) and once
more, idempotently, when it ends. A writer whose epoch is older than the row's is refused: a poller that
was paused past its lease cannot overwrite what the new owner archived. The statements are in
shared.store.archive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg_pool
from redis.asyncio import Redis

from shared.answers import submit
from shared.clock import now_ms
from shared.ids import SessionId
from shared.store import requests
from shared.store.archive import upsert_fenced
from shared.store.connections import store_errors
from shared.store.live import LiveState


class Archive:
    """One per replica; every method returns False (and changes nothing) when the epoch is stale."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    async def record_claim(self, session: LiveState, epoch: int, prompts: Sequence[Mapping[str, str]]) -> bool:
        """Mark the row `running` (creating it for jobs enqueued straight into Redis) and record the prompts."""
        with store_errors("PostgreSQL"):
            async with self._pool.connection() as conn, conn.transaction():
                return await upsert_fenced(
                    conn, session, epoch, status="running", prompts=prompts, keep_messages=True, now_ms=now_ms()
                )

    async def record_final(
        self,
        session: LiveState,
        epoch: int,
        *,
        status: str,
        messages: Sequence[Any] | None,
        error: str | None,
        seq: int,
    ) -> bool:
        """The archive itself: every message as OpenCode returned it (None: keep the row's), the final status
        and error."""
        now = now_ms()
        with store_errors("PostgreSQL"):
            async with self._pool.connection() as conn, conn.transaction():
                return await upsert_fenced(
                    conn,
                    session,
                    epoch,
                    status=status,
                    messages=messages or (),
                    keep_messages=messages is None,
                    error=error,
                    completed_ms=now,
                    extra_layer={"seq": seq},
                    now_ms=now,
                )

    async def record_asked(self, session_id: str, entries: Sequence[Mapping[str, Any]]) -> None:
        """The requests the session waits on, as first seen (each recorded once)."""
        with store_errors("PostgreSQL"):
            async with self._pool.connection() as conn:
                for entry in entries:
                    await requests.record_asked(conn, session_id, entry)

    async def record_outcome(self, session_id: str, request_id: str, outcome: str) -> None:
        with store_errors("PostgreSQL"):
            async with self._pool.connection() as conn:
                await requests.record_outcome(conn, session_id, request_id, outcome, now_ms())

    async def record_gone(self, session_id: str, request_ids: Sequence[str]) -> None:
        with store_errors("PostgreSQL"):
            async with self._pool.connection() as conn:
                await requests.record_gone(conn, session_id, request_ids)

    async def answer(
        self, redis: Redis, session_id: SessionId, entry: Mapping[str, Any], body: Mapping[str, Any], by: str
    ) -> None:
        """The poller's own answer (the timeout), recorded and handed over exactly as a person's."""
        with store_errors("PostgreSQL"):
            async with self._pool.connection() as conn:
                await submit(redis, conn, session_id, entry, body, by)
