"""Writes to `opencode_sessions`, each fenced by the lease epoch recorded in the row's metadata.

The row is written when a poller claims a session (status `running`, the PostgreSQL backstop) and once
more, idempotently, when it ends. A writer whose epoch is older than the row's is refused: a poller that
was paused past its lease cannot overwrite what the new owner archived.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg_pool
from psycopg.types.json import Jsonb

from shared.archive_rows import LAYER_KEY, to_timestamp
from shared.store.connections import store_errors

_UPSERT = f"""
INSERT INTO opencode_sessions AS s
    (id, ticket_id, session_type, status, messages, metadata, started_at, completed_at, error_message)
VALUES (%(id)s, %(ticket_id)s, %(session_type)s, %(status)s, %(messages)s, %(metadata)s, %(started_at)s,
        %(completed_at)s, %(error)s)
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status,
    messages = CASE WHEN %(keep_messages)s THEN s.messages ELSE excluded.messages END,
    metadata = jsonb_set(coalesce(s.metadata, '{{}}'::jsonb), '{{{LAYER_KEY}}}',
                         coalesce(s.metadata -> '{LAYER_KEY}', '{{}}'::jsonb) || %(layer)s),
    completed_at = excluded.completed_at,
    error_message = excluded.error_message
WHERE coalesce((s.metadata #>> '{{{LAYER_KEY},epoch}}')::bigint, 0) <= %(epoch)s
RETURNING s.metadata -> '{LAYER_KEY}' -> 'prompts'
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


class Archive:
    """One per replica; every method returns False (and changes nothing) when the epoch is stale."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    async def record_claim(self, session: Mapping[str, Any], epoch: int, prompts: Sequence[Any]) -> bool:
        """Mark the row `running` (creating it for jobs enqueued straight into Redis) and record the prompts."""
        return await self._write(session, epoch, status="running", prompts=prompts, keep_messages=True)

    async def record_final(
        self,
        session: Mapping[str, Any],
        epoch: int,
        *,
        status: str,
        messages: Sequence[Any],
        error: str | None,
        seq: int,
    ) -> bool:
        """The archive itself: every message as OpenCode returned it, the final status and error."""
        return await self._write(
            session,
            epoch,
            status=status,
            messages=messages,
            error=error,
            completed_ms=_now_ms(),
            extra_layer={"seq": seq},
        )

    async def _write(
        self,
        session: Mapping[str, Any],
        epoch: int,
        *,
        status: str,
        prompts: Sequence[Any] = (),
        messages: Sequence[Any] = (),
        keep_messages: bool = False,
        error: str | None = None,
        completed_ms: int | None = None,
        extra_layer: Mapping[str, Any] | None = None,
    ) -> bool:
        layer: dict[str, Any] = {"epoch": epoch, "title": session.get("title") or None, **(extra_layer or {})}
        user_meta = session.get("metadata")
        params = {
            "id": session["sessionId"],
            "ticket_id": session.get("ticketId") or None,
            "session_type": session["sessionType"],
            "status": status,
            "messages": Jsonb(list(messages)),
            "metadata": Jsonb({**(user_meta if isinstance(user_meta, dict) else {}), LAYER_KEY: layer}),
            "started_at": to_timestamp(int(session.get("startedAt") or _now_ms())),
            "completed_at": to_timestamp(completed_ms) if completed_ms else None,
            "error": error,
            "keep_messages": keep_messages,
            "layer": Jsonb(layer),
            "epoch": epoch,
        }
        with store_errors("PostgreSQL"):
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(_UPSERT, params)
                row = await cur.fetchone()
                if row is None:
                    return False
                if prompts:
                    await self._merge_prompts(conn, session["sessionId"], row[0] or [], prompts)
        return True

    @staticmethod
    async def _merge_prompts(conn: Any, session_id: str, recorded: Sequence[Any], prompts: Sequence[Any]) -> None:
        known = {p.get("messageID") for p in recorded if isinstance(p, dict)}
        new = [p for p in prompts if p.get("messageID") not in known]
        if new:
            await conn.execute(
                f"UPDATE opencode_sessions SET metadata = jsonb_set(metadata, '{{{LAYER_KEY},prompts}}', %s)"
                " WHERE id = %s",
                (Jsonb([*recorded, *new]), session_id),
            )
