"""StatusBoard: one status fetch for the replica, and the trackers it wakes once that fetch is in."""

from __future__ import annotations

import pytest

from poller.status_board import StatusBoard
from shared.opencode.client import OpenCodeClient

pytestmark = pytest.mark.anyio


async def test_a_tracker_waiting_on_the_next_fetch_is_woken_once_and_a_forgotten_one_never(
    opencode: OpenCodeClient,
) -> None:
    board = StatusBoard(opencode, max_age_s=5.0)
    woken: list[str] = []
    board.wake_after_refresh("ses_a", lambda: woken.append("a"))
    board.wake_after_refresh("ses_a", lambda: woken.append("a again"))  # one wake per session: the latest
    wake_b = lambda: woken.append("b")  # noqa: E731
    board.wake_after_refresh("ses_b", wake_b)
    board.forget("ses_a", lambda: woken.append("a"))  # an older tracker of ses_a ended: the newer one's stays
    board.forget("ses_b", wake_b)  # its tracker ended
    assert woken == []
    await board.refresh()
    assert woken == ["a again"]
    await board.refresh()
    assert woken == ["a again"]  # once: a tracker that still waits asks again
