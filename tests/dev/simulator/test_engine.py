"""An abort that lands in the same loop turn as the end of the run's wait: the run must not write once more.

The loop order is forced, not timed: the test blocks the loop past the run's sleep, so the timer that ends it
and the test's own step become ready together, and the abort runs while the sleeping task's wake-up is queued
but has not run. Without the check after each wait that step overwrote the messages the abort had closed.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup

from shared.dev.simulator.engine import Run, SimMessage, SimSession, Simulation

pytestmark = pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the ordering below is asyncio's


def start(sim: Simulation, tg: TaskGroup) -> SimSession:
    """A session of `sim` whose run (its script) starts in `tg`."""
    sim.task_group = tg
    sess = sim.create_session(title="t", directory=None)
    sim.prompt(sess, message_id=None, parts=[], agent="build", model={"providerID": "p", "modelID": "m"})
    return sess


async def test_no_write_after_an_abort_in_the_same_turn(anyio_backend: str) -> None:
    writes: list[str] = []
    sleeping = anyio.Event()

    async def script(sim: Simulation, sess: SimSession, run: Run, user: SimMessage) -> None:
        message = SimMessage({"id": "msg_b", "role": "assistant", "parentID": user.info["id"], "time": {}})
        sess.add(message)
        sleeping.set()
        await sim.sleep(0.05)
        writes.append("after the sleep")  # what an aborted run must never reach
        await sim.sleep(60)

    sim = Simulation(speed=1.0, directory="/tmp", retry_delays=(), script=script)
    async with anyio.create_task_group() as tg:
        sess = start(sim, tg)
        await sleeping.wait()
        time.sleep(0.1)  # noqa: ASYNC251 - blocks the loop on purpose: the sleep's timer is due when it turns
        await anyio.lowlevel.checkpoint()  # queued before the due timer: the next turn runs this step first,
        await anyio.lowlevel.checkpoint()  # then the timer, which resolves the sleep and queues its wake-up
        sim.abort(sess.id)  # the sleeping task's wait is done, so anyio delivers the cancel a turn later
    # the task group has waited for the run's task to end
    info: dict[str, Any] = sess.messages["msg_b"].info
    assert writes == []
    assert "completed" in info["time"] and info["error"]["name"] == "MessageAbortedError"


async def test_no_write_after_an_abort_rejects_the_request_the_run_waits_on(anyio_backend: str) -> None:
    """The abort answers the run's pending request (reject) and cancels the run in the same step."""
    writes: list[Any] = []
    asking = anyio.Event()

    async def script(sim: Simulation, sess: SimSession, run: Run, user: SimMessage) -> None:
        sess.add(SimMessage({"id": "msg_b", "role": "assistant", "parentID": user.info["id"], "time": {}}))
        asking.set()  # the request is pending from here: ask() runs up to its wait without yielding
        writes.append(await sim.asks.ask("permission", {"sessionID": sess.id, "permission": "bash"}))

    sim = Simulation(speed=1.0, directory="/tmp", retry_delays=(), script=script)
    async with anyio.create_task_group() as tg:
        sess = start(sim, tg)
        await asking.wait()
        sim.abort(sess.id)
    assert writes == [] and not sim.asks.pending
    assert sess.messages["msg_b"].info["error"]["name"] == "MessageAbortedError"
