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


@pytest.mark.parametrize("status", [{"type": "idle"}, {"type": "busy"}, "idle", None, ["idle"]])
async def test_only_a_readable_idle_status_is_an_idle_report(status: object) -> None:
    """An idle report is decided on at once (one confirming poll); a status that cannot be read is no report.
    Was: any session.status that was not a busy object counted as idle."""
    inbox = Inbox()
    inbox.put({"type": "session.status", "properties": {"sessionID": "ses_x", "status": status}})
    assert inbox.poll_now  # whatever it says, a poll reads the truth
    assert (inbox.idle_at is not None, inbox.confirm_idle) == (
        (True, True) if status == {"type": "idle"} else (False, False)
    )
    inbox.put({"type": "session.error", "properties": {"sessionID": "ses_x"}})
    assert inbox.confirm_idle == (status == {"type": "idle"})  # an error report is no idle report either


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


async def test_one_alarm_clock_wakes_every_waiter_when_due_and_skips_the_woken_and_the_cancelled() -> None:
    """Every tracker's wait shares the loop's one timer: each is woken at its own time, in the order of their
    times; one woken early by a put, or cancelled with its tracker, is left alone when its time comes."""
    inboxes = [Inbox() for _ in range(30)]
    timeouts = [0.002 * ((n * 7) % 30) for n in range(30)]  # not in the order the waits start
    finished: list[int] = []
    results: dict[int, bool] = {}

    async def wait(n: int) -> None:
        results[n] = await inboxes[n].wait(timeouts[n])
        finished.append(n)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in range(30):
                tg.start_soon(wait, n)
            cancelled = anyio.CancelScope()
            tg.start_soon(_wait_forever, Inbox(), cancelled)
            await anyio.wait_all_tasks_blocked()
            inboxes[29].put(delta(0))  # its time (0.058 s) is the last: woken now, it must not be woken again
            cancelled.cancel()
    assert results == {n: n != 29 for n in range(30)}
    assert finished == [29, *sorted(range(29), key=lambda n: timeouts[n])]
    assert cancelled.cancel_called


async def _wait_forever(inbox: Inbox, scope: anyio.CancelScope) -> None:
    with scope:
        await inbox.wait(0.001)
        await inbox.wait(3600)
