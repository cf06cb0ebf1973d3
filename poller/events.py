"""The replica's one connection to OpenCode's `/event` stream, routing each owned session's events to its tracker.

The stream is the fast path (live text, changes within milliseconds); polling stays the source of truth.
When the stream drops every tracker is told to poll at once and goes back to the fast cadence; when it comes
back every tracker polls at once, to catch what was missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

import anyio
import structlog

from poller.event_apply import POLL_TRIGGERS
from shared.backoff import Backoff
from shared.errors import SessionLayerError
from shared.opencode.client import OpenCodeClient

log = structlog.get_logger(__name__)

RECONNECT_BASE_S = 0.2
RECONNECT_CAP_S = 5.0
INBOX_LIMIT = 10_000


_NO_CONTEXT = contextvars.Context()  # the wait's timer only resolves a future: it needs no copy of the caller's


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Inbox:
    """A tracker's mailbox: its session's events, and requests to poll now."""

    def __init__(self, limit: int = INBOX_LIMIT) -> None:
        self._limit = limit
        self.events: list[Any] = []
        self.poll_now = False
        self.tick_now = False  # the job changed (a prompt, a cancel, an answer): tick without waiting for the cadence
        self.gap = False  # deltas were lost (the stream dropped, or this inbox overflowed): their texts stop growing
        # when OpenCode last said the session is idle (session.idle / session.status idle), None once it said busy
        self.idle_at: float | None = None
        self.confirm_idle = False  # an idle report waits for its confirming (whole-list) poll
        self._waiter: asyncio.Future[None] | None = None  # the tracker's wait, while it waits

    def put(self, event: Any) -> None:
        if len(self.events) >= self._limit:
            # the tracker fell behind: drop what waits (a poll rebuilds the truth), and since deltas were lost
            # the texts they were building stop growing, as after a stream drop
            self.events.clear()
            self.gap = True
            self.poll_now = True
        else:
            self.events.append(event)
        if event.get("type") in POLL_TRIGGERS:
            self.poll_now = True
            self._note_status(event)
        self._wake()

    def _note_status(self, event: Any) -> None:
        """Completion from the event stream: an idle report is decided at once, on one confirming poll."""
        kind = event.get("type")
        status = (event.get("properties") or {}).get("status")
        if kind == "session.status" and isinstance(status, dict) and status.get("type") != "idle":
            self.idle_at = None
        elif kind == "session.idle" or kind == "session.status":
            self.idle_at = time.monotonic()
            self.confirm_idle = True

    def request_poll(self) -> None:
        self.poll_now = True
        self._wake()

    def request_tick(self) -> None:
        self.tick_now = True
        self._wake()

    async def wait(self, timeout_s: float) -> bool:
        """Until something arrives or `timeout_s` passed; True when the time is up.

        The caller must take True as the time being up rather than read the clock: a loop timer may fire a few ms
        early (uvloop rounds to whole ms, from a loop time that is stale by the current iteration's work), and a
        tracker that then found its tick not yet due waited again, and again, spinning until the clock caught up:
        2.4 extra wake-ups per tick at 1,000 sessions, more under load.
        """
        if self.events or self.poll_now or self.tick_now:
            return False
        # A bare future that a loop timer resolves: no cancellation is thrown through the tracker each tick (half
        # the wait's CPU, measured), and no Event, deque, coroutine chain, bound method or context copy per wait.
        # Every tracker is in this wait nearly all the time, so whatever it allocates is alive when the collector
        # runs: with anyio's Event, ~10 objects per tracker that each young collection walked (at 5,000 sessions
        # 150,000 young objects, 50-190 ms per collection, three a second).
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout_s, _resolve, waiter, context=_NO_CONTEXT)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        return not (self.events or self.poll_now or self.tick_now)

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)

    def take(self) -> list[Any]:
        events, self.events = self.events, []
        return events


class EventRouter:
    """`run()` while the replica holds a session at this place (poller.places); trackers attach their inbox while
    they own a session. A run cancelled and started again opens a new connection."""

    def __init__(self, opencode: OpenCodeClient) -> None:
        self._opencode = opencode
        self._inboxes: dict[str, Inbox] = {}
        self.healthy = False
        self.connections = 0

    def attach(self, session_id: str, inbox: Inbox) -> None:
        self._inboxes[session_id] = inbox

    def detach(self, session_id: str) -> None:
        self._inboxes.pop(session_id, None)

    async def run(self) -> None:
        try:
            await self._follow()
        finally:  # closed (the place's last session ended): not healthy until a new run connects
            self._dropped()

    async def _follow(self) -> None:
        backoff = Backoff(RECONNECT_BASE_S, RECONNECT_CAP_S)
        while True:
            try:
                async for event in self._opencode.events():
                    if event["type"] == "server.connected":
                        self._connected()
                        backoff.reset()
                        continue
                    properties = event.get("properties")
                    session_id = properties.get("sessionID") if isinstance(properties, dict) else None
                    inbox = self._inboxes.get(session_id) if isinstance(session_id, str) else None
                    if inbox is not None:
                        inbox.put(event)
            except SessionLayerError as exc:
                error: str | None = exc.message
            else:
                error = None  # OpenCode closed the stream
            delay = backoff.failed(time.monotonic())
            if error is not None:
                log.warning("events_disconnected", error=error, retry_in_s=round(delay, 2))
            self._dropped()
            await anyio.sleep(delay)

    def _connected(self) -> None:
        self.healthy = True
        self.connections += 1
        log.info("events_connected", sessions=len(self._inboxes))
        for inbox in self._inboxes.values():
            inbox.request_poll()  # whatever happened while we were away

    def _dropped(self) -> None:
        if self.healthy:
            self.healthy = False
            for inbox in self._inboxes.values():
                inbox.gap = True
                inbox.request_poll()  # back to the fast cadence at once
