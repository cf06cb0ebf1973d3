"""A cancel that arrives while the first prompt is still on its way to OpenCode must still abort the run.

Found while checking cancel against the real server's behaviour: OpenCode's abort only stops a run that exists,
so an abort that reaches it before the prompt does stops nothing. The tracker sends the abort once, on the next
tick after the cancel (poller/tracker.py, `_tick`: `if self._cancel and not self._abort_sent`), without waiting
for an in-flight `prompt_async` (`PromptDelivery.in_flight`), and never again once the run starts. So the run
is answered in full, and the archive says `cancelled` above a complete, unaborted answer. The simulator's `slow`
fault on prompt_async holds the prompt in flight (OpenCode gets it only after the delay), so the race is
reproduced on purpose here.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shared import commands
from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.faults import Fault
from shared.dev.simulator.server import serve_in_thread
from shared.opencode.client import OpenCodeClient
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def test_cancel_while_the_prompt_is_in_flight_aborts_the_run(redis: Any, db: Any, make_poller: Any) -> None:
    in_flight = Fault("slow", path="/session/*/prompt_async", ms=3000)
    with serve_in_thread(create_simulator(1.0, faults=[in_flight])) as url:
        make_poller(url, name="cancel-race", POLL_INTERVAL_MS="200", LEASE_TTL_MS="3000")
        async with OpenCodeClient(url) as opencode, httpx.AsyncClient(base_url=url) as http:
            state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="SLOW answer")
            session_id = state["sessionId"]

            async def prompt_sent() -> bool:
                requests = (await http.get("/__sim/stats")).json()["requests"]
                return bool(requests.get(f"POST /session/{session_id}/prompt_async"))

            await wait_for(prompt_sent, timeout=30, what="the poller sending the prompt")
            assert await commands.cancel(redis, db, session_id) == "requested"

            async def archived() -> tuple[Any, ...] | None:
                cur = await db.execute(
                    "SELECT status, messages FROM opencode_sessions WHERE id = %s AND status = 'cancelled'",
                    (session_id,),
                )
                row = await cur.fetchone()
                return tuple(row) if row is not None else None

            row = await wait_for(archived, timeout=60, what="the session archived as cancelled")
            assert row is not None
            _, messages = row
            answered = [m["info"] for m in messages if m["info"].get("finish") == "stop"]
            assert not answered, f"the run was not aborted: it answered in full {answered}"
