"""A drift-free cadence: the loop body's own duration is subtracted, and missed ticks are skipped."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable

import anyio


async def every(interval_s: float, on_lag: Callable[[float], None] | None = None) -> AsyncIterator[int]:
    """Yield the tick number every interval_s; a body slower than one interval skips ticks, never bunches them.

    `on_lag` receives, at each tick, how late it fires against its schedule (the event loop's load).
    """
    tick = 0
    next_at = time.monotonic()
    while True:
        if on_lag is not None:
            on_lag(max(0.0, time.monotonic() - next_at))
        yield tick
        tick += 1
        next_at += interval_s
        now = time.monotonic()
        if next_at <= now:
            missed = math.floor((now - next_at) / interval_s) + 1
            next_at += missed * interval_s
            tick += missed
        await anyio.sleep(next_at - now)


class Cadence:
    """The same drift-free schedule as `every`, for a loop that also wakes up for other reasons (events).

    The first tick is due at once; `phase_s` shifts every later one. Sessions claimed in one batch would
    otherwise tick in the same instant for as long as they live: the replica's work would come in bursts
    (a batch of polls, then their answers at once), and whatever waits behind a burst is late.
    """

    def __init__(self, phase_s: float = 0.0) -> None:
        self.next_at = time.monotonic()
        self._phase_s = phase_s

    def wait_s(self) -> float:
        return max(0.0, self.next_at - time.monotonic())

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def lag(self) -> float:
        return max(0.0, time.monotonic() - self.next_at)

    def advance(self, interval_s: float) -> None:
        """Schedule the next tick one interval on; ticks missed by a slow body are skipped, not bunched."""
        now = time.monotonic()
        self.next_at = min(self.next_at + interval_s, now + interval_s) + self._phase_s
        self._phase_s = 0.0
        if self.next_at <= now:
            self.next_at = now + interval_s - (now - self.next_at) % interval_s
