"""Permission requests and questions: a run waits on them, they are listed and answered with OpenCode's shapes."""

from __future__ import annotations

import httpx
import pytest

from shared.dev.simulator.asks import PERMISSION_DENIED, PERMISSION_FEEDBACK, PERMISSION_REJECTED, QUESTION_DISMISSED
from tests.dev.simulator.driver import (
    EventStream,
    idle_event,
    is_finished,
    messages,
    new_session,
    prompt,
    status,
    wait_for,
)
from tests.dev.simulator.shapes import (
    COMPLETED,
    OPTION,
    PERMISSION_REQUEST,
    QUESTION_INFO,
    QUESTION_REQUEST,
    RUNNING,
    TOOL_ERROR,
    conform,
)

pytestmark = pytest.mark.anyio

BASH_ASK = [{"permission": "bash", "pattern": "*", "action": "ask"}]


def asked(kind: str, session_id: str):  # type: ignore[no-untyped-def]
    return lambda e: e["type"] == f"{kind}.asked" and e["properties"]["sessionID"] == session_id


async def _ask_bash(sim_url: str, http: httpx.AsyncClient, events: EventStream) -> tuple[str, dict[str, object]]:
    session_id = await new_session(http, permission=BASH_ASK)
    await prompt(http, session_id, "TOOL run echo")
    seen = await events.until(asked("permission", session_id))
    return session_id, seen[-1]["properties"]


async def test_bash_waits_for_permission_then_runs_once(sim_url: str, http: httpx.AsyncClient) -> None:
    async with EventStream(sim_url) as events:
        session_id, request = await _ask_bash(sim_url, http, events)
        conform(request, PERMISSION_REQUEST)
        assert request["permission"] == "bash" and request["patterns"] == ["echo hello"]
        assert request["metadata"] == {"command": "echo hello"} and request["always"] == ["echo *"]
        assert (await http.get("/permission")).json() == [request]
        assert (await status(http))[session_id] == {"type": "busy"}
        tool = (await messages(http, session_id))[1]["parts"][1]
        conform(tool["state"], RUNNING)  # the part waits `running`, with its input
        assert tool["callID"] == request["tool"]["callID"]  # type: ignore[index]

        resp = await http.post(f"/permission/{request['id']}/reply", json={"reply": "once"})
        assert resp.status_code == 200 and resp.json() is True
        await events.until(idle_event(session_id))
    replied = [p for t, p in events.of(session_id) if t == "permission.replied"]
    assert replied == [{"sessionID": session_id, "requestID": request["id"], "reply": "once"}]
    msgs = await messages(http, session_id)
    assert is_finished({}, session_id, msgs)
    conform(msgs[1]["parts"][1]["state"], COMPLETED)
    assert (await http.get("/permission")).json() == []
    again = await http.post(f"/permission/{request['id']}/reply", json={"reply": "once"})
    assert again.status_code == 404 and again.json()["_tag"] == "PermissionNotFoundError"


async def test_rejected_permission_ends_the_tool_in_error_and_the_run_goes_on(
    sim_url: str, http: httpx.AsyncClient
) -> None:
    async with EventStream(sim_url) as events:
        session_id, request = await _ask_bash(sim_url, http, events)
        body = {"reply": "reject", "message": "not on this machine"}
        assert (await http.post(f"/permission/{request['id']}/reply", json=body)).json() is True
        await events.until(idle_event(session_id))
    msgs = await messages(http, session_id)
    state = msgs[1]["parts"][1]["state"]
    conform(state, TOOL_ERROR)
    assert state["error"] == PERMISSION_FEEDBACK + "not on this machine"
    assert msgs[2]["parts"][1]["text"] == f"The tool ran. Output: {state['error']}"
    assert PERMISSION_REJECTED.startswith("The user rejected permission")


async def test_deny_rule_refuses_without_asking(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http, permission=[{"permission": "bash", "pattern": "echo *", "action": "deny"}])
    await prompt(http, session_id, "TOOL run echo")
    msgs = await wait_for(http, session_id, lambda m: is_finished({}, session_id, m))
    assert msgs[1]["parts"][1]["state"]["error"] == PERMISSION_DENIED


async def test_question_is_answered_with_a_label(sim_url: str, http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    async with EventStream(sim_url) as events:
        await prompt(http, session_id, "QUESTION which color")
        request = (await events.until(asked("question", session_id)))[-1]["properties"]
        conform(request, QUESTION_REQUEST)
        for info in request["questions"]:
            conform(info, QUESTION_INFO)
            for option in info["options"]:
                conform(option, OPTION)
        assert (await http.get("/question")).json() == [request]
        resp = await http.post(f"/question/{request['id']}/reply", json={"answers": [["Blue"]]})
        assert resp.json() is True
        await events.until(idle_event(session_id))
    replied = [p for t, p in events.of(session_id) if t == "question.replied"]
    assert replied == [{"sessionID": session_id, "requestID": request["id"], "answers": [["Blue"]]}]
    msgs = await messages(http, session_id)
    assert msgs[1]["parts"][1]["tool"] == "question"
    conform(msgs[1]["parts"][1]["state"], COMPLETED)
    assert '"Which color should the button be?"="Blue"' in msgs[2]["parts"][1]["text"]
    stats = (await http.get("/__sim/stats")).json()
    assert stats["replies"][request["id"]] == 1


async def test_question_rejected(sim_url: str, http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    async with EventStream(sim_url) as events:
        await prompt(http, session_id, "QUESTION which color")
        request = (await events.until(asked("question", session_id)))[-1]["properties"]
        assert (await http.post(f"/question/{request['id']}/reject")).json() is True
        await events.until(idle_event(session_id))
    assert ("question.rejected", {"sessionID": session_id, "requestID": request["id"]}) in events.of(session_id)
    msgs = await messages(http, session_id)
    assert msgs[1]["parts"][1]["state"]["error"] == QUESTION_DISMISSED


async def test_bad_bodies_and_unknown_ids(http: httpx.AsyncClient) -> None:
    assert (await http.post("/permission/per_unknown/reply", json={"reply": "maybe"})).status_code == 400
    assert (await http.post("/permission/per_unknown/reply", json={"reply": "once"})).status_code == 404
    assert (await http.post("/question/que_unknown/reply", json={"answers": "Blue"})).status_code == 400
    assert (await http.post("/question/que_unknown/reject")).status_code == 404
    bad_rule = {"permission": [{"permission": "bash", "action": "ask"}]}
    assert (await http.post("/session", json=bad_rule)).status_code == 400


async def test_abort_rejects_what_the_run_waits_on(sim_url: str, http: httpx.AsyncClient) -> None:
    async with EventStream(sim_url) as events:
        session_id, _ = await _ask_bash(sim_url, http, events)
        assert (await http.post(f"/session/{session_id}/abort")).json() is True
        await events.until(lambda e: e["type"] == "permission.replied" and e["properties"]["sessionID"] == session_id)
    assert (await http.get("/permission")).json() == []
    assert session_id not in await status(http)


async def test_session_keeps_its_ruleset(http: httpx.AsyncClient) -> None:
    created = (await http.post("/session", json={"permission": BASH_ASK})).json()
    assert created["permission"] == BASH_ASK
    assert (await http.get(f"/session/{created['id']}")).json()["permission"] == BASH_ASK
