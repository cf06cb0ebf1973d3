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
