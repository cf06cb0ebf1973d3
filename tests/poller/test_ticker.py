"""The cadence on a controlled clock: drift-free, missed ticks skipped, never bunched."""

from __future__ import annotations

import pytest

from poller import ticker
from poller.ticker import Cadence, every


class Clock:
    """time.monotonic for the ticker module; `sleep` advances it instead of waiting, and records the request."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.late_s = 0.0  # how late a sleep wakes up (a loaded event loop)
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 9))
        self.now += seconds + self.late_s


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(ticker.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(ticker.anyio, "sleep", fake.sleep)
    return fake


@pytest.mark.anyio
async def test_every_subtracts_the_body_and_skips_missed_ticks(clock: Clock) -> None:
    lags: list[float] = []
    ticks = every(1.0, on_lag=lags.append)
    seen = []
    for body_s in (0.3, 0.0, 2.5, 0.2):
        seen.append((await anext(ticks), clock.now))
        clock.now += body_s  # the loop body's own duration
    seen.append((await anext(ticks), clock.now))
    # tick 1 at 101.0 despite the 0.3 s body; the 2.5 s body misses 103.0 and 104.0 (ticks 3, 4) and the
    # next tick is on the grid at 105.0, not at once and not twice
    assert seen == [(0, 100.0), (1, 101.0), (2, 102.0), (5, 105.0), (6, 106.0)]
    assert clock.sleeps == [0.7, 1.0, 0.5, 0.8]
    assert lags == [0.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.anyio
async def test_every_reports_how_late_a_tick_fires(clock: Clock) -> None:
    lags: list[float] = []
    ticks = every(1.0, on_lag=lags.append)
    await anext(ticks)
    clock.late_s = 0.25
    await anext(ticks)
    await anext(ticks)
    assert lags == [0.0, 0.25, 0.25]
    assert clock.sleeps == [1.0, 0.75]  # the next sleep is shortened: the schedule does not drift


def test_cadence_is_drift_free_and_skips_what_a_slow_tick_missed(clock: Clock) -> None:
    cadence = Cadence()
    assert cadence.due() and cadence.wait_s() == 0.0
    clock.now = 100.1  # a tick's body took 0.1 s
    cadence.advance(0.5)
    assert cadence.next_at == 100.5 and cadence.wait_s() == pytest.approx(0.4)
    assert not cadence.due()
    clock.now = 101.7  # a slow tick: 101.0 and 101.5 were missed
    assert cadence.due() and cadence.lag() == pytest.approx(1.2)
    cadence.advance(0.5)
    assert cadence.next_at == pytest.approx(102.0)  # back on the grid, once: not bunched, not drifted
    clock.now = 102.0
    cadence.advance(0.5)
    assert cadence.next_at == pytest.approx(102.5)


def test_cadence_after_a_postponed_tick_counts_from_now(clock: Clock) -> None:
    cadence = Cadence()
    cadence.next_at = 103.0  # a failed poll retries on its backoff
    clock.now = 103.0
    cadence.advance(0.5)
    assert cadence.next_at == 103.5
    clock.now = 103.1
    cadence.next_at = 100.0  # far behind the clock: never a burst of catch-up ticks
    cadence.advance(0.5)
    assert cadence.next_at == pytest.approx(103.5)  # the next grid point ahead, once


def test_a_phase_shifts_every_tick_after_the_first(clock: Clock) -> None:
    """Trackers claimed together start at once, then tick on their own grids: never all in the same instant."""
    shifted, plain = Cadence(phase_s=0.2), Cadence()
    assert shifted.due() and plain.due()  # the first tick (the first poll after a claim) is never delayed
    shifted.advance(0.5)
    plain.advance(0.5)
    assert (shifted.next_at, plain.next_at) == (pytest.approx(100.7), pytest.approx(100.5))
    clock.now = 100.7
    shifted.advance(0.5)
    assert shifted.next_at == pytest.approx(101.2)  # shifted once, then the plain interval: a grid of its own
