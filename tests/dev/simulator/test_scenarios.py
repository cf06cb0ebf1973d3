"""Each scripted run stores what OpenCode 1.18.33 stores, state by state.

Expected shapes are in shapes.py; transitions are read from `GET /event`, so no assertion depends on timing.
"""

from __future__ import annotations

import httpx
import pytest

from tests.dev.simulator.driver import (
    EventStream,
    idle_event,
    is_finished,
    messages,
    new_session,
    prompt,
    run_to_end,
    status,
    step_end,
    wait_for,
    wait_status,
)
from tests.dev.simulator.shapes import (
    BASH_METADATA,
    COMPLETED,
    PART,
    PENDING,
    REASONING,
    RETRY,
    RUNNING,
    STEP_START,
    STREAMING,
    TEXT,
    TOOL_ERROR,
    USER,
    USER_TEXT,
    Shape,
    api_error,
    conform,
    conform_messages,
    failed,
    finished,
    step_finish,
    tool,
)

pytestmark = pytest.mark.anyio

# -- one run per scenario --------------------------------------------------------------------------------------


async def test_echo(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    message_id = await prompt(http, session_id, "ECHO hello world")
    assert (await status(http))[session_id] == {"type": "busy"}  # busy as soon as the 204 is back
    msgs = await wait_for(http, session_id, lambda m: bool(m) and is_finished({}, session_id, m))
    conform_messages(msgs, [(USER, [USER_TEXT]), (finished("stop"), [STEP_START, TEXT, step_finish("stop")])])
    assert msgs[0]["info"]["id"] == message_id and msgs[0]["info"]["summary"] == {"diffs": []}
    assert msgs[1]["info"]["parentID"] == message_id
    assert msgs[1]["parts"][1]["text"] == "ECHO: ECHO hello world"
    await wait_status(http, lambda found: session_id not in found)


async def test_tool_run_transitions(sim_url: str, http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    async with EventStream(sim_url) as events:
        user_id = await prompt(http, session_id, "TOOL run echo hello")
        await events.until(idle_event(session_id))
    msgs = await messages(http, session_id)
    done_bash = tool("bash", COMPLETED)
    conform_messages(
        msgs,
        [
            (USER, [USER_TEXT]),
            (finished("tool-calls"), [STEP_START, done_bash, step_finish("tool-calls")]),
            (finished("stop"), [STEP_START, TEXT, step_finish("stop")]),
        ],
    )
    state = msgs[1]["parts"][1]["state"]
    assert state["input"] == {"command": "echo hello"} and state["output"] == "hello\n"
    conform(state["metadata"], BASH_METADATA)
    assert msgs[2]["parts"][1]["text"] == "The tool ran. Output: hello"
    assert {m["info"]["parentID"] for m in msgs[1:]} == {user_id}

    timeline = events.of(session_id)
    parts = [p["part"] for t, p in timeline if t == "message.part.updated"]
    tool_states = [p["state"] for p in parts if p["type"] == "tool"]
    assert tool_states[0]["status"] == "pending" and tool_states[-1]["status"] == "completed"
    assert "pending" not in [s["status"] for s in tool_states[1:]]
    for s in tool_states:
        conform(s, {"pending": PENDING, "running": RUNNING, "completed": COMPLETED}[s["status"]])
    text_states = [p for p in parts if p["type"] == "text"]
    conform(text_states[-2], Shape(PART | {"type": "text"} | STREAMING))  # stored "" while it streams
    conform(text_states[-1], TEXT)
    deltas = "".join(
        p["delta"] for t, p in timeline if t == "message.part.delta" and p["partID"] == text_states[-1]["id"]
    )
    assert deltas == text_states[-1]["text"]
    # the end of each step: step-finish stored -> info.finish -> info.time.completed; then one idle at the end
    for message in msgs[1:]:
        assert step_end(timeline, message["info"]["id"]) == ["step-finish", "finish", "completed"]
    statuses = [p["status"]["type"] for t, p in timeline if t == "session.status"]
    assert statuses[0] == "busy" and statuses[-1] == "idle" and set(statuses[:-1]) == {"busy"}
    assert timeline[-1][0] == "session.idle"


async def test_tool_error(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    msgs = await run_to_end(http, session_id, "TOOLERR read a missing file")
    conform_messages(
        msgs,
        [
            (USER, [USER_TEXT]),
            (finished("tool-calls"), [STEP_START, tool("read", TOOL_ERROR), step_finish("tool-calls")]),
            (finished("stop"), [STEP_START, TEXT, step_finish("stop")]),
        ],
    )
    state = msgs[1]["parts"][1]["state"]
    assert state["input"] == {"filePath": "does-not-exist.txt"}
    assert state["error"].startswith("File not found: ") and state["error"].endswith("/does-not-exist.txt")
    assert msgs[2]["parts"][1]["text"] == f"The tool ran. Output: {state['error']}"


async def test_think(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    msgs = await run_to_end(http, session_id, "THINK then ECHO")
    conform_messages(
        msgs, [(USER, [USER_TEXT]), (finished("stop"), [STEP_START, REASONING, TEXT, step_finish("stop")])]
    )
    assert msgs[1]["parts"][2]["text"] == "ECHO: THINK then ECHO"


async def test_fail_retries_then_errors(sim_url: str, http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    async with EventStream(sim_url) as events:
        await prompt(http, session_id, "FAIL please")
        await events.until(lambda e: e["type"] == "message.updated" and "error" in e["properties"]["info"])
        await events.until(idle_event(session_id))
    timeline = events.of(session_id)
    statuses = [p["status"] for t, p in timeline if t == "session.status"]
    retries = [s for s in statuses if s["type"] == "retry"]
    for s in retries:
        conform(s, RETRY)
    assert [s["attempt"] for s in retries] == [1, 2, 3]
    assert retries[0]["message"] == "Scripted failure (prompt contained FAIL)"
    kinds = [s["type"] for s in statuses]
    assert kinds[: kinds.index("idle")] == ["busy", "busy", "retry", "busy", "retry", "busy", "retry", "busy"]
    # the session goes idle before the message is final: session.error -> idle -> message.updated(error) -> idle
    names = [t for t, p in timeline if t != "session.status" or p["status"]["type"] == "idle"]
    tail = names[names.index("session.error") :]
    assert tail == [
        "session.error",
        "session.status",
        "session.idle",
        "message.updated",
        "session.status",
        "session.idle",
    ]

    msgs = await messages(http, session_id)
    conform_messages(msgs, [(USER, [USER_TEXT]), (failed(api_error(500, True)), [])])
    assert session_id not in await status(http)
    error = next(p["error"] for t, p in timeline if t == "session.error")
    assert error == msgs[1]["info"]["error"]


async def test_reject_fails_at_once(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    resp = await http.post(f"/session/{session_id}/message", json={"parts": [{"type": "text", "text": "REJECT this"}]})
    assert resp.status_code == 200  # the blocking call answers 200 with the failed assistant message
    conform(resp.json(), Shape({"info": failed(api_error(400, False)), "parts": []}))
    msgs = await messages(http, session_id)
    conform_messages(msgs, [(USER, [USER_TEXT]), (failed(api_error(400, False)), [])])
    assert msgs[1]["info"]["error"]["data"]["message"] == "Scripted rejection (prompt contained REJECT)"
