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
