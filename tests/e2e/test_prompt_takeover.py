"""A replica is killed with `kill -9` while OpenCode is still taking its prompt: the replica that takes the session
over must not send the prompt again, and the session ends with it once, answered once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shared import commands
from shared.opencode.client import OpenCodeClient
from tests.helpers import wait_for
from tests.poller.test_worker import archived

pytestmark = pytest.mark.anyio

TAKES_MS = 4000  # OpenCode carries the send out this late: after the new owner's claim (lease 1.5 s) and first list


async def stats(simulator: str) -> Any:
    async with httpx.AsyncClient(base_url=simulator) as client:
        return (await client.get("/__sim/stats")).json()


async def test_kill_9_while_opencode_takes_the_prompt(redis, db, make_poller, simulator_process) -> None:
    simulator = simulator_process(speed=1)
    async with httpx.AsyncClient(base_url=simulator) as client:
        fault = {"kind": "late", "method": "POST", "path": "/session/*/prompt_async", "count": 1, "ms": TAKES_MS}
        (await client.post("/__sim/faults", json=fault)).raise_for_status()
    first = make_poller(simulator, name="sending")
    async with OpenCodeClient(simulator) as opencode:
        sid = (await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO once"))["sessionId"]
    sending = f"POST /session/{sid}/prompt_async"

    async def arrived() -> bool:
        return (await stats(simulator))["requests"].get(sending, 0) >= 1

    await wait_for(arrived, timeout=30, what="the first owner's send reaching OpenCode")
    first.kill()  # kill -9, its send still being taken
    make_poller(simulator, name="next")
    _, messages, _, _ = await wait_for(lambda: archived(db, sid), timeout=60, what="the session archived")

    async def every_send_carried_out() -> Any:
        found = await stats(simulator)
        sent = found["requests"].get(sending, 0)
        return found if found["prompt_async"]["by_session"].get(sid, 0) == sent else None

    found = await wait_for(every_send_carried_out, timeout=15, what="OpenCode done with every send")
    assert found["prompt_async"]["by_session"][sid] == 1
    user_parts = [p for m in messages if m["info"]["role"] == "user" for p in m["parts"]]
    assert [p["text"] for p in user_parts] == ["ECHO once"]
    assert [m["info"]["role"] for m in messages] == ["user", "assistant"]
