"""JobBoard against real Redis: one HMGET for every held session, and nothing to read when none is held."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from poller.job_board import JobBoard
from shared.errors import Unavailable
from shared.ids import SessionId
from shared.store import keys
from shared.store.batch import CommandBatch

pytestmark = pytest.mark.anyio

A = SessionId("ses_boarda000000000000000000")
B = SessionId("ses_boardb000000000000000000")


async def test_the_board_answers_each_held_sessions_rev_and_none_when_unknown(redis):
    await redis.hset(keys.JOB_REVS, mapping={A: "3"})
    board = JobBoard(redis)
    assert board.rev(A) is None  # not read yet
    await board.refresh([A, B])
    assert board.rev(A) == "3"
    assert board.rev(B) is None  # no job: the tracker reads its own hash, and finds it gone


async def test_a_replica_holding_nothing_any_more_reads_nothing(redis):
    # every tracker may end between the replica tick's status read and this one
    await redis.hset(keys.JOB_REVS, mapping={A: "3"})
    board = JobBoard(redis)
    await board.refresh([A])
    await board.refresh([])
    assert board.rev(A) is None


async def test_a_refresh_wakes_the_trackers_whose_job_changed(redis):
    await redis.hset(keys.JOB_REVS, mapping={A: "1", B: "1"})
    board = JobBoard(redis)
    woken: list[str] = []
    wake_a = lambda: woken.append("a")  # noqa: E731
    board.watch(A, wake_a)
    board.watch(B, lambda: woken.append("b"))
    await board.refresh([A, B])
    assert sorted(woken) == ["a", "b"]  # first read: both revs are news
    woken.clear()
    await board.refresh([A, B])
    assert woken == []  # nothing changed: quiet trackers sleep on
    await redis.hset(keys.JOB_REVS, A, "2")  # a prompt or a cancel for A
    await board.refresh([A, B])
    assert woken == ["a"]
    woken.clear()
    board.forget(B, lambda: woken.append("b"))  # another tracker's wake (of the same session): B's stays
    board.forget(A, wake_a)
    await redis.hset(keys.JOB_REVS, mapping={A: "3", B: "2"})
    await board.refresh([A, B])
    assert woken == ["b"]


async def test_a_failed_refresh_wakes_every_tracker():
    unreachable = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=1)  # nothing listens there
    board = JobBoard(unreachable)
    woken: list[str] = []
    board.watch(A, lambda: woken.append("a"))
    with pytest.raises(Unavailable):
        await board.refresh([A])
    assert woken == ["a"]  # the rev is unknown: the tracker reads its own job hash on its next tick
    await unreachable.aclose()


class _HeldReplies(CommandBatch):
    """Real Redis, with each reply held back until the test lets it through."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.asked = anyio.Event()
        self.answer = anyio.Event()

    async def execute(self, *command: str | bytes | int) -> Any:
        self.asked.set()
        await self.answer.wait()
        return await super().execute(*command)


async def test_while_a_refresh_is_in_flight_the_board_still_answers_the_last_revs(redis):
    # at 8,000 sessions the read takes milliseconds, and every tracker that ticks meanwhile and finds its rev
    # unknown reads its own job hash: hundreds of needless reads a second
    await redis.hset(keys.JOB_REVS, mapping={A: "1"})
    held = _HeldReplies(redis)
    board = JobBoard(redis, held)
    held.answer.set()
    await board.refresh([A])
    held.asked, held.answer = anyio.Event(), anyio.Event()
    await redis.hset(keys.JOB_REVS, A, "2")
    async with anyio.create_task_group() as tg:
        tg.start_soon(board.refresh, [A])
        await held.asked.wait()
        assert board.rev(A) == "1"
        held.answer.set()
    assert board.rev(A) == "2"
