"""A session's run loop: aborts at every stage, prompts queued while busy, a messageID sent twice.

Expected shapes are in shapes.py; transitions are read from `GET /event`, so no assertion depends on timing.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from shared.ids import new_message_id
from tests.dev.simulator.driver import (
    EventStream,
    idle_event,
    is_finished,
    messages,
    new_session,
    prompt,
    run_to_end,
    status,
    wait_for,
    wait_status,
)
from tests.dev.simulator.shapes import (
    ABORTED,
    ASSISTANT_BASE,
    BASH_ABORTED,
    COMPLETED,
    COMPLETED_TIME,
    RETRY,
    STEP_START,
    TEXT,
    TOKENS,
    USER,
    USER_TEXT,
    Shape,
    conform,
    conform_messages,
    failed,
    finished,
    step_finish,
    tool,
)

pytestmark = pytest.mark.anyio

# -- aborts ----------------------------------------------------------------------------------------------------


async def test_abort_while_text_streams(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    await prompt(http, session_id, "SLOW story")
    await wait_for(http, session_id, lambda m: len(m) == 2 and any(p["type"] == "text" for p in m[1]["parts"]))
    resp = await http.post(f"/session/{session_id}/abort")
    assert (resp.status_code, resp.json()) == (200, True)
    assert session_id not in await status(http)  # synchronous: already idle and final
    msgs = await messages(http, session_id)
    conform_messages(msgs, [(USER, [USER_TEXT]), (failed(ABORTED), [STEP_START, TEXT])])
    partial = msgs[1]["parts"][1]["text"]
    assert partial and "Slow answer to: SLOW story".startswith(partial) and partial != "Slow answer to: SLOW story"
    assert "finish" not in msgs[1]["info"]


async def test_abort_while_bash_runs(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    await prompt(http, session_id, "TOOL SLOW abort me")

    def running(m: list[dict[str, Any]]) -> bool:
        return len(m) == 2 and any(p["type"] == "tool" and p["state"]["status"] == "running" for p in m[1]["parts"])

    await wait_for(http, session_id, running)
    assert (await http.post(f"/session/{session_id}/abort")).json() is True
    msgs = await messages(http, session_id)
    conform_messages(msgs, [(USER, [USER_TEXT]), (failed(ABORTED), [STEP_START, tool("bash", COMPLETED)])])
    state = msgs[1]["parts"][1]["state"]
    assert state["output"] == BASH_ABORTED and state["title"] == "sleep 4; echo hello"
    assert state["metadata"] == {"output": BASH_ABORTED, "exit": None, "truncated": False}
    assert session_id not in await status(http)


async def test_abort_while_retrying(slow_retry_url: str) -> None:
    async with httpx.AsyncClient(base_url=slow_retry_url, timeout=20) as http:
        session_id = await new_session(http)
        await prompt(http, session_id, "FAIL then abort")
        retrying = await wait_status(http, lambda found: found.get(session_id, {}).get("type") == "retry")
        conform(retrying[session_id], RETRY)
        assert (await messages(http, session_id))[-1]["parts"] == []  # open, no parts, while retrying
        assert (await http.post(f"/session/{session_id}/abort")).json() is True
        msgs = await messages(http, session_id)
        closed = Shape(ASSISTANT_BASE | {"time": COMPLETED_TIME, "tokens": TOKENS})  # no error, no finish
        conform_messages(msgs, [(USER, [USER_TEXT]), (closed, [])])
        assert session_id not in await status(http)


async def test_abort_idle_session_and_blocking_call(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    assert (await http.post(f"/session/{session_id}/abort")).json() is True
    body = {"parts": [{"type": "text", "text": "SLOW blocking"}]}
    async with anyio.create_task_group() as tg:
        replies: list[httpx.Response] = []

        async def blocking() -> None:
            replies.append(await http.post(f"/session/{session_id}/message", json=body))

        tg.start_soon(blocking)
        await wait_for(http, session_id, lambda m: len(m) == 2 and len(m[1]["parts"]) >= 2)
        assert (await http.post(f"/session/{session_id}/abort")).json() is True
    assert replies[0].status_code == 200
    assert replies[0].json() == (await messages(http, session_id))[-1]
    conform(replies[0].json()["info"], failed(ABORTED))


# -- queueing, duplicates, paging ------------------------------------------------------------------------------


async def test_prompt_while_busy_is_queued(sim_url: str, http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    async with EventStream(sim_url) as events:
        first = await prompt(http, session_id, "SLOW first")
        await wait_for(http, session_id, lambda m: len(m) == 2)  # as captured: the first answer has begun
        second = await prompt(http, session_id, "ECHO second while busy")
        during = await messages(http, session_id)
        assert during[-1]["info"]["id"] == second and "summary" not in during[-1]["info"]  # appended now
        assert (await status(http))[session_id] == {"type": "busy"}
        await events.until(idle_event(session_id))
    msgs = await messages(http, session_id)
    step = (finished("stop"), [STEP_START, TEXT, step_finish("stop")])
    conform_messages(msgs, [(USER, [USER_TEXT]), step, (USER, [USER_TEXT]), step])
    assert [m["info"]["id"] for m in msgs[::2]] == [first, second]
    assert [m["info"]["parentID"] for m in msgs[1::2]] == [first, second]
    assert msgs[3]["parts"][1]["text"] == "ECHO: ECHO second while busy"
    # busy until every queued prompt is answered: one idle, after the last message completed
    timeline = events.of(session_id)
    assert [t for t, _ in timeline].count("session.idle") == 1
    assert session_id not in await status(http)


async def test_known_message_id_appends_its_parts_again(sim_url: str, http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    await run_to_end(http, session_id, "ECHO once")
    message_id = new_message_id()  # fresh: OpenCode orders messages by id
    first = await prompt(http, session_id, "ECHO twice", message_id)
    msgs = await wait_for(http, session_id, lambda m: len(m) == 4 and is_finished({}, session_id, m))
    await prompt(http, session_id, "ECHO twice", message_id)
    again = await messages(http, session_id)
    assert first == message_id and len(again) == len(msgs) == 4  # one message, no second answer
    dup = again[2]
    assert dup["info"]["id"] == message_id and [p["text"] for p in dup["parts"]] == ["ECHO twice", "ECHO twice"]
    assert len({p["id"] for p in dup["parts"]}) == 2
    stats = (await http.get("/__sim/stats")).json()
    assert stats["prompt_async"]["by_message_id"][message_id] == 2
    assert stats["prompt_async"]["by_session"][session_id] == 3
