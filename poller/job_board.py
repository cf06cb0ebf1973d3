"""One read of `opencode:queue:revs` per replica tick: every held session's promptsRev at once."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from shared.ids import SessionId
from shared.models import as_text
from shared.store import keys
from shared.store.connections import store_errors


class JobBoard:
    """The promptsRev of every session the replica holds, as of the last refresh; trackers ask it, so a tracker
    reads its own job hash only when its job changed (a prompt, a cancel)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._revs: dict[str, str] = {}

    async def refresh(self, session_ids: Sequence[SessionId]) -> None:
        """One HMGET; when it fails every rev is unknown, so every tracker reads its own job hash."""
        self._revs = {}
        if not session_ids:
            return  # HMGET needs at least one field
        with store_errors("Redis"):
            revs = await self._redis.hmget(keys.JOB_REVS, list(session_ids))
        self._revs = {sid: as_text(rev) for sid, rev in zip(session_ids, revs, strict=True) if rev is not None}

    def rev(self, session_id: str) -> str | None:
        """The session's promptsRev, or None when unknown (not read yet, the read failed, or the job is gone)."""
        return self._revs.get(session_id)
