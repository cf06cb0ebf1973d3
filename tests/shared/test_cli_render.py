"""shared.cli.render: `show` and `watch` write a session with the same lines; `watch` prints only what is new."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shared.cli.render import LivePrinter, header, session_lines

SID = "ses_1a2b3c4d5e6fABCDEFGHIJklmn"
USER = {"id": "msg_1", "role": "user"}
ASSISTANT = {"id": "msg_2", "role": "assistant"}


def session(**fields: Any) -> dict[str, Any]:
    base = {"sessionId": SID, "status": "running", "sessionType": "ask", "ticketId": None, "live": True}
    return base | {"messages": [], "error": None} | fields


def text(part_id: str, body: str, kind: str = "text") -> dict[str, Any]:
    return {"id": part_id, "type": kind, "text": body}


def tool(status: str, **state: Any) -> dict[str, Any]:
    return {"id": "prt_t", "type": "tool", "tool": "bash", "state": {"status": status} | state}


def test_header() -> None:
    assert header(session()) == f"{SID}  running  (live, ask)"
    assert header(session(status="error", live=False, ticketId="T-1")) == f"{SID}  error  (archived, ask, ticket T-1)"


def test_session_lines() -> None:
    shown = session(
        status="error",
        live=False,
        error="it   broke\nbadly",
        messages=[
            {"info": USER, "parts": [text("prt_1", "two\nlines")]},
            {
                "info": ASSISTANT | {"error": {"name": "APIError", "data": {"message": "rate limited"}}},
                "parts": [
                    {"id": "prt_s", "type": "step-start"},
                    text("prt_r", "", "reasoning"),
                    tool("error", title="rm -rf", error="denied\n by policy"),
                    {"id": "prt_f", "type": "file"},
                ],
            },
        ],
    )
    assert session_lines(shown) == [
        f"{SID}  error  (archived, ask)",
        "  user      text: two",
        "                  lines",
        "  assistant reasoning: …",
        "  assistant tool bash [error] rm -rf: denied by policy",
        "  assistant file",
        "  assistant error: rate limited",
        "session error: it broke badly",
    ]


def test_live_printer_prints_only_what_is_new(capsys: pytest.CaptureFixture[str]) -> None:
    printer = LivePrinter()
    state = session(status="pending")
    printer.render(state)
    state["status"] = "running"
    state["messages"] = [{"info": ASSISTANT, "parts": [text("prt_1", "hel")]}]
    printer.render(copy.deepcopy(state))
    printer.render(copy.deepcopy(state))  # nothing new: nothing printed
    state["messages"][0]["parts"] = [text("prt_1", "hello\nworld")]  # grows on the same line
    printer.render(copy.deepcopy(state))
    state["messages"][0]["parts"].append(tool("running", title="ls"))
    printer.render(copy.deepcopy(state))
    state["messages"][0]["parts"] = [text("prt_1", "Hello"), tool("completed", title="ls")]  # rewritten, not grown
    printer.render(copy.deepcopy(state))
    printer.finish(state | {"status": "completed", "live": False})
    assert capsys.readouterr().out.splitlines() == [
        f"{SID}  pending  (live, ask)",
        "status: running",
        "  assistant text: hello",
        "                  world",
        "  assistant tool bash [running] ls",
        "  assistant text (revised): Hello",
        "  assistant tool bash [completed] ls",
        "status: completed",
    ]
