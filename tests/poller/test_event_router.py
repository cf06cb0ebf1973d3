"""The replica's EventRouter: what ends one `/event` connection never ends the replica."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
import pytest

from poller.events import EventRouter, Inbox
from shared.opencode.client import OpenCodeClient
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


class FailsOnce:
    """An OpenCode client whose first `/event` connection fails with an error no check foresaw."""

    def __init__(self) -> None:
        self.connections = 0

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        self.connections += 1
        if self.connections == 1:
            raise RuntimeError("a record nothing foresaw")
        yield {"type": "server.connected", "properties": {}}
        yield {"type": "session.idle", "properties": {"sessionID": "ses_x"}}
        await anyio.sleep_forever()


async def test_an_unforeseen_error_on_the_stream_reconnects_it() -> None:
    """Was: anything but our own errors left the router's task, and with it the replica's task group: one odd record
    (JSON nested too deeply to read) ended every replica that held a session on that server, one after another."""
    opencode = FailsOnce()
    router = EventRouter(cast(OpenCodeClient, opencode))
    inbox = Inbox(limit=10)
    router.attach("ses_x", inbox)
    async with anyio.create_task_group() as tg:
        tg.start_soon(router.run)

        async def delivered() -> bool:
            return bool(inbox.events)

        await wait_for(delivered, timeout=10, what="the event after the reconnect")
        assert (router.healthy, opencode.connections, inbox.gap) == (True, 2, False)
        tg.cancel_scope.cancel()
    assert inbox.take() == [{"type": "session.idle", "properties": {"sessionID": "ses_x"}}]


class OneEvent:
    """An OpenCode client whose `/event` stream sends one session's event once `go` is set."""

    def __init__(self) -> None:
        self.go = anyio.Event()

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        yield {"type": "server.connected", "properties": {}}
        await self.go.wait()
        yield {"type": "session.idle", "properties": {"sessionID": "ses_x"}}
        await anyio.sleep_forever()


async def test_an_older_tracker_that_ends_leaves_the_newer_ones_inbox_attached() -> None:
    """A replica can claim a session again while the tracker of its lost lease still runs (Redis lost the session and
    the backstop queued it again). Was: that older tracker, ending, detached the session's inbox, the newer
    tracker's: it got no event again and waited on its slow polls."""
    opencode = OneEvent()
    router = EventRouter(cast(OpenCodeClient, opencode))
    older, newer = Inbox(limit=10), Inbox(limit=10)
    router.attach("ses_x", older)
    router.attach("ses_x", newer)
    router.detach("ses_x", older)
    async with anyio.create_task_group() as tg:
        tg.start_soon(router.run)
        opencode.go.set()

        async def delivered() -> bool:
            return bool(newer.events)

        await wait_for(delivered, timeout=10, what="the event in the newer tracker's inbox")
        router.detach("ses_x", newer)
        tg.cancel_scope.cancel()
    assert not older.events
