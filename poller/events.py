"""The replica's one connection to OpenCode's `/event` stream, routing each owned session's events to its tracker.

The stream is the fast path (live text, changes within milliseconds); polling stays the source of truth.
When the stream drops every tracker is told to poll at once and goes back to the fast cadence; when it comes
back every tracker polls at once, to catch what was missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import math
import time
import weakref
from typing import Any

import anyio
import structlog

from poller.event_apply import GAP, POLL_TRIGGERS
from shared.backoff import Backoff
from shared.errors import SessionLayerError
from shared.opencode.client import UNREADABLE, OpenCodeClient

log = structlog.get_logger(__name__)

RECONNECT_BASE_S = 0.2
RECONNECT_CAP_S = 5.0
INBOX_LIMIT = 10_000


_NO_CONTEXT = contextvars.Context()  # the alarm's timer only resolves futures: it needs no copy of anyone's
ALARM_SLACK_S = 0.001  # a loop timer fires up to a ms early (uvloop rounds): what is due within it rings too


class AlarmClock:
    """One loop timer for every waiting tracker of a replica: a heap of (when, future), each resolved True when due.

    Every tracker waits nearly all the time, so whatever one wait allocates is alive whenever the collector's young
    generation is walked: with a loop timer (a TimerHandle and uvloop's UVTimer) and a coroutine per wait, at 8,000
    sessions those were about a quarter of what each young collection walked (~140 ms each, stalling every session).
    A wait now costs one heap entry; a future woken early stays in the heap until it is due, and is skipped then.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, asyncio.Future[bool]]] = []
        self._order = itertools.count()  # equal times never compare the futures
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def ring_at(self, when: float, future: asyncio.Future[bool]) -> None:
        heapq.heappush(self._heap, (when, next(self._order), future))
        if when < self._timer_at:
            self._set_timer(when)

    def _set_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._ring, context=_NO_CONTEXT)

    def _ring(self) -> None:
        self._timer, self._timer_at = None, math.inf
        heap, due = self._heap, self._loop.time() + ALARM_SLACK_S
        while heap and heap[0][0] <= due:
            future = heapq.heappop(heap)[2]
            if not future.done():  # else woken early, or its tracker was cancelled
                future.set_result(True)
        if heap:
            self._set_timer(heap[0][0])


_CLOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AlarmClock] = weakref.WeakKeyDictionary()


def alarm_clock(loop: asyncio.AbstractEventLoop) -> AlarmClock:
    """The running loop's one AlarmClock."""
    clock = _CLOCKS.get(loop)
    if clock is None:
        clock = _CLOCKS[loop] = AlarmClock(loop)
    return clock


class Inbox:
    """A tracker's mailbox: its session's events, and requests to poll now."""

    def __init__(self, limit: int = INBOX_LIMIT) -> None:
        self._limit = limit
        self.events: list[Any] = []
        self.poll_now = False
        self.tick_now = False  # the job changed (a prompt, a cancel, an answer): tick without waiting for the cadence
        # deltas were lost before every event waiting here (the stream dropped, or this inbox overflowed): the texts
        # they built stop growing. A drop while events wait is marked among them instead (event_apply.GAP)
        self.gap = False
        self._gap_next = False  # the stream dropped: a gap goes before the next event put
        # when OpenCode last said the session is idle (session.idle / session.status idle), None once it said busy
        self.idle_at: float | None = None
        self.confirm_idle = False  # an idle report waits for its confirming (whole-list) poll
        self._waiter: asyncio.Future[bool] | None = None  # the tracker's wait, while it waits

    def put(self, event: Any) -> None:
        if len(self.events) >= self._limit:
            # the tracker fell behind: drop what waits (a poll rebuilds the truth), and since deltas were lost
            # the texts they were building stop growing, as after a stream drop
            self.events.clear()
            self.gap = True
            self._gap_next = False
            self.poll_now = True
        else:
            if self._gap_next:
                self._gap_next = False
                if self.events:
                    self.events.append(GAP)
                else:  # nothing waits: the gap comes before whatever the tracker takes next
                    self.gap = True
            self.events.append(event)
        if event.get("type") in POLL_TRIGGERS:
            self.poll_now = True
            self._note_status(event)
        self._wake()

    def _note_status(self, event: Any) -> None:
        """Completion from the event stream: an idle report is decided at once, on one confirming poll."""
        kind = event.get("type")
        status = (event.get("properties") or {}).get("status")
        if kind == "session.status":
            if not isinstance(status, dict):
                return  # not a status we can read: the poll it triggered reads the truth
            if status.get("type") != "idle":
                self.idle_at = None
                return
        if kind in ("session.idle", "session.status"):
            self.idle_at = time.monotonic()
            self.confirm_idle = True

    def mark_gap(self) -> None:
        """Deltas were lost from here on (the stream dropped): the gap goes at its place among the events, before the
        next one, so that those taken together with what comes after the reconnect still grow the texts they were
        building up to it. Was: the whole batch was applied as if after the gap, and a text that started in it grew
        on past the lost deltas."""
        self._gap_next = True
        self.request_poll()

    def request_poll(self) -> None:
        self.poll_now = True
        self._wake()

    def request_tick(self) -> None:
        self.tick_now = True
        self._wake()

    def wait(self, timeout_s: float) -> asyncio.Future[bool]:
        """Await it: until something arrives or `timeout_s` passed; True when the time is up.

        The caller must take True as the time being up rather than read the clock: a loop timer may fire a few ms
        early (uvloop rounds to whole ms, from a loop time that is stale by the current iteration's work), and a
        tracker that then found its tick not yet due waited again, and again, spinning until the clock caught up:
        2.4 extra wake-ups per tick at 1,000 sessions, more under load.

        A bare future that the loop's AlarmClock or a put() resolves: no coroutine, timer, Event or context copy
        per wait (see AlarmClock), and no cancellation thrown through the tracker each tick.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        if self.events or self.poll_now or self.tick_now:
            waiter.set_result(False)
            return waiter
        self._waiter = waiter
        alarm_clock(loop).ring_at(loop.time() + timeout_s, waiter)
        return waiter

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    def take(self) -> list[Any]:
        # the inbox keeps its own list: a new one per take lived until the next, young at every collection (one
        # per tracker); the copy handed out dies with the batch it carries
        events = self.events.copy()
        self.events.clear()
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

    def detach(self, session_id: str, inbox: Inbox) -> None:
        """Drop `inbox`, if it is still the session's (a newer tracker's is left as it is)."""
        if self._inboxes.get(session_id) is inbox:
            del self._inboxes[session_id]

    async def run(self) -> None:
        try:
            await self._follow()
        finally:  # closed (the place's last session ended): not healthy until a new run connects
            self._dropped()

    async def _follow(self) -> None:
        backoff = Backoff(RECONNECT_BASE_S, RECONNECT_CAP_S)
        while True:
            routed = False  # whether this connection gave a tracker anything: its drop then lost what followed
            try:
                async for event in self._opencode.events():
                    if event["type"] == "server.connected":
                        self._connected()
                        backoff.reset()
                        continue
                    if event["type"] == UNREADABLE:  # whose record it was is unknown: every text may have lost a delta
                        log.warning("event_unreadable")
                        for held in self._inboxes.values():
                            held.mark_gap()
                        continue
                    properties = event.get("properties")
                    session_id = properties.get("sessionID") if isinstance(properties, dict) else None
                    inbox = self._inboxes.get(session_id) if isinstance(session_id, str) else None
                    if inbox is not None:
                        inbox.put(event)
                        routed = True
            except SessionLayerError as exc:
                error: str | None = exc.message
            except Exception as exc:  # a record nothing foresaw ends this stream (polls go on), never the replica
                log.error("events_failed", exc_info=exc)
                error = f"{type(exc).__name__}: {exc}"
            else:
                error = None  # OpenCode closed the stream
            delay = backoff.failed(time.monotonic())
            if error is not None:
                log.warning("events_disconnected", error=error, retry_in_s=round(delay, 2))
            self._dropped(routed)
            await anyio.sleep(delay)

    def _connected(self) -> None:
        self.healthy = True
        self.connections += 1
        log.info("events_connected", sessions=len(self._inboxes))
        for inbox in self._inboxes.values():
            inbox.request_poll()  # whatever happened while we were away

    def _dropped(self, routed: bool = False) -> None:
        """`routed`: the connection gave events although OpenCode never said `server.connected` on it: its drop
        loses deltas all the same. Was: no gap, and the texts grew on past what was lost."""
        if self.healthy or routed:
            self.healthy = False
            for inbox in self._inboxes.values():
                inbox.mark_gap()  # and back to the fast cadence at once
