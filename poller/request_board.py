"""One `GET /permission` and one `GET /question` per replica tick: every request waiting for a person, for all
the sessions the replica holds at once (OpenCode lists them instance-wide; never one call per session)."""

from __future__ import annotations

import time
from typing import Any

from shared.opencode.client import OpenCodeClient


class RequestBoard:
    """The latest lists by session, and when the fetch that produced them started."""

    def __init__(self, opencode: OpenCodeClient) -> None:
        self._opencode = opencode
        self._by_session: dict[str, list[dict[str, Any]]] = {}
        self.fetched_at: float | None = None

    @property
    def closed(self) -> bool:
        """Its place was closed (its last session ended): there is nothing more to read."""
        return self._opencode.closed

    async def refresh(self) -> None:
        started = time.monotonic()
        permissions = await self._opencode.permissions()
        questions = await self._opencode.questions()
        by_session: dict[str, list[dict[str, Any]]] = {}
        for kind, requests in (("permission", permissions), ("question", questions)):
            for request in requests:
                by_session.setdefault(request["sessionID"], []).append({"kind": kind, **request})
        self._by_session = by_session
        self.fetched_at = started

    def requests(self, session_id: str, since: float) -> list[dict[str, Any]] | None:
        """The session's waiting requests (each with its `kind`), from a fetch started after `since`; None when
        there is no such fetch yet."""
        if self.fetched_at is None or self.fetched_at <= since:
            return None
        return list(self._by_session.get(session_id, []))
