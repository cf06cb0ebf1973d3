"""A tracker's Inbox: what its bound does when events come faster than the tracker takes them."""

from __future__ import annotations

import anyio
import pytest

from poller.events import Inbox

pytestmark = pytest.mark.anyio


def delta(n: int) -> dict[str, object]:
    return {"type": "message.part.delta", "properties": {"sessionID": "ses_x", "delta": str(n)}}


async def test_events_wait_in_order_until_taken() -> None:
    inbox = Inbox(limit=3)
    for n in range(3):
        inbox.put(delta(n))
    assert not inbox.poll_now and not inbox.gap
    assert inbox.take() == [delta(0), delta(1), delta(2)]
    assert inbox.events == []


async def test_an_overflow_drops_the_backlog_and_asks_for_a_poll_and_a_gap() -> None:
    inbox = Inbox(limit=3)
    for n in range(3):
        inbox.put(delta(n))
    inbox.put(delta(3))  # one too many: the tracker fell behind
    assert inbox.events == []
    assert inbox.poll_now  # a poll rebuilds the truth
    assert inbox.gap  # deltas were lost: the texts they built must not be extended
    inbox.put(delta(4))  # what comes after the overflow is kept
    assert inbox.take() == [delta(4)]


async def test_status_events_ask_for_a_poll() -> None:
    inbox = Inbox()
    inbox.put({"type": "session.idle", "properties": {"sessionID": "ses_x"}})
    assert inbox.poll_now and not inbox.gap


async def test_wait_returns_at_once_when_something_waits_and_wakes_on_put() -> None:
    inbox = Inbox()
    inbox.request_poll()
    with anyio.fail_after(1):
        assert await inbox.wait(3600) is False  # not the time: something waits
    inbox.poll_now = False
    woken: list[bool] = []

    async def wait() -> None:
        woken.append(await inbox.wait(3600))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            inbox.put(delta(0))  # wakes the waiter long before its timeout
    assert woken == [False]
    assert inbox.take() == [delta(0)]


async def test_wait_says_the_time_is_up_when_its_timer_fired() -> None:
    """The tracker ticks on this answer rather than on the clock: a loop timer may fire a few ms early."""
    inbox = Inbox()
    with anyio.fail_after(5):
        assert await inbox.wait(0.01) is True
        assert await inbox.wait(0) is True
