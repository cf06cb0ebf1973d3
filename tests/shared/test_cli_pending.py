"""shared.cli.pending: `show` lists what a waiting session waits on, `watch` prints each request once, as it arrives,
each with the command that answers it."""

from __future__ import annotations

from typing import Any

import pytest

from shared.cli.render import LivePrinter, session_lines
from tests.odd_shapes import PERMISSION, QUESTION

SID = "ses_1a2b3c4d5e6fABCDEFGHIJklmn"


def session(pending: list[Any], status: str = "waiting") -> dict[str, Any]:
    return {"sessionId": SID, "status": status, "sessionType": "ask", "live": True, "messages": [], "pending": pending}


# PERMISSION and QUESTION as show and watch print them, each with the command that answers it
REQUEST_LINES = [
    "  waiting   permission per_1: bash echo hello",
    f"            answer: opencode-sessions reply {SID} per_1 --once|--always|--reject [--message TEXT]",
    "  waiting   question que_1:",
    "            1. Which color? [Red | Blue]",
    "            2. Which sizes? [S | L, several allowed]",
    f"            answer: opencode-sessions answer {SID} que_1 --choice LABEL --choice LABEL (or --reject)",
]


def test_show_lists_every_request_with_how_to_answer_it() -> None:
    assert session_lines(session([PERMISSION, QUESTION]))[1:] == REQUEST_LINES


def test_watch_prints_each_request_once_as_it_arrives(capsys: pytest.CaptureFixture[str]) -> None:
    printer = LivePrinter()
    printer.render(session([], status="running"))
    printer.render(session([PERMISSION]))
    printer.render(session([PERMISSION]))
    printer.render(session([PERMISSION, QUESTION]))
    printer.render(session([], status="running"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        "status: waiting",
        *REQUEST_LINES,
        "status: running",
    ]


@pytest.mark.parametrize(
    ("session_id", "request_id"),
    [(SID, "per_1; touch /tmp/pwned"), (SID, "que_$(id)"), (SID, None), ("ses_1 $(id)", "per_1")],
)
def test_no_answering_command_is_built_from_an_id_the_commands_would_refuse(session_id: str, request_id: Any) -> None:
    """The command is for pasting into a shell: an id from OpenCode (or a store) that is not of its own form would
    run there. Was: printed into the command line as it came."""
    for entry in (PERMISSION, QUESTION):
        lines = session_lines({**session([{**entry, "id": request_id}]), "sessionId": session_id})
        answers = [line for line in lines if line.strip().startswith("answer:")]
        assert answers == [
            "            answer: none from opencode-sessions: the id is not OpenCode's per_… or que_… form"
        ]
