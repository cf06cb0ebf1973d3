"""Fanout's bounded queues and signals, without a network: what a slow client is told."""

from __future__ import annotations

import pytest

from gateway.fanout import CLOSED, LOST, Fanout, Published, Subscription

pytestmark = pytest.mark.anyio


def published(seq: int) -> Published:
    return Published(f'{{"seq":{seq},"type":"update"}}'.encode(), {"seq": seq, "type": "update"})


async def test_a_client_that_falls_behind_is_told_it_lost_events():
    sub = Subscription("c", max_queued=3)
    for seq in range(1, 5):  # one more than the bound
        sub.push(published(seq))
    assert await sub.get(0.01) is LOST
    assert await sub.get(0.01) is None  # the backlog was dropped: the stream takes a fresh snapshot instead
    sub.push(published(9))
    item = await sub.get(0.01)
    assert isinstance(item, Published) and item.seq == 9


async def test_items_come_in_order_and_a_timeout_gives_none():
    sub = Subscription("c", max_queued=10)
    assert await sub.get(0.01) is None
    for seq in (1, 2, 3):
        sub.push(published(seq))
    assert [(await sub.get(0.01)).seq for _ in range(3)] == [1, 2, 3]


async def test_close_ends_every_subscription_for_good():
    fanout = Fanout("redis://127.0.0.1:1/0")
    sub = Subscription("c", max_queued=10)
    fanout._subs["c"] = {sub}
    fanout.close()
    assert await sub.get(0.01) is CLOSED
    assert await sub.get(0.01) is CLOSED
    with pytest.raises(Exception, match="shutting down"):
        async with fanout.subscribe("d"):
            pass


def test_a_frame_is_encoded_once_for_every_client():
    item = published(7)
    assert item.frame("update") is item.frame("update")
    assert item.frame("update") == b'id: 7\nevent: update\ndata: {"seq":7,"type":"update"}\n\n'
