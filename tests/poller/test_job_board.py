"""JobBoard against real Redis: one HMGET for every held session, and nothing to read when none is held."""

from __future__ import annotations

import pytest

from poller.job_board import JobBoard
from shared.ids import SessionId
from shared.store import keys

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
