"""One `GET /session/status` per tick for the whole replica: OpenCode answers it for every busy session."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared.opencode.client import OpenCodeClient


class StatusBoard:
    """The latest busy map and when the request that produced it started."""

    def __init__(self, opencode: OpenCodeClient, max_age_s: float) -> None:
        self._opencode = opencode
        self._max_age_s = max_age_s
        self._statuses: dict[str, Any] = {}
        self.fetched_at: float | None = None
        self._waiting: dict[str, Callable[[], None]] = {}  # session id -> what to call after the next refresh

    @property
    def closed(self) -> bool:
        """Its place was closed (its last session ended): there is nothing more to read."""
        return self._opencode.closed

    async def refresh(self) -> None:
        started = time.monotonic()
        self._statuses = dict(await self._opencode.status())
        self.fetched_at = started
        waiting, self._waiting = self._waiting, {}
        for wake in waiting.values():
            wake()

    def wake_after_refresh(self, session_id: str, wake: Callable[[], None]) -> None:
        """Call `wake` once the next fetch is in: a tracker whose messages say the run ended, while the board
        (fetched before it did) still says busy, decides then rather than a whole tick of its own later."""
        self._waiting[session_id] = wake

    def forget(self, session_id: str, wake: Callable[[], None]) -> None:
        """Drop `wake`, if it is still the session's (a newer tracker's is left as it is)."""
        if self._waiting.get(session_id) == wake:  # ==: a bound method is made anew each time it is named
            del self._waiting[session_id]

    def busy(self, session_id: str, since: float) -> bool | None:
        """Whether OpenCode runs the session, from a fetch started after `since`; None when no such fetch."""
        if self.fetched_at is None or self.fetched_at <= since:
            return None
        if time.monotonic() - self.fetched_at > self._max_age_s:
            return None
        status = self._statuses.get(session_id)
        return status is not None and status.get("type") != "idle"
