"""`show`, `watch` and `answer` take any session OpenCode's values make (tests/odd_shapes.py): every field below the
ids in every odd shape, in the transcript and in the requests a run waits on, prints lines or is a clear error,
never a traceback."""

from __future__ import annotations

from typing import Any

import pytest

from shared.answers import parse_choices
from shared.cli.pending import pending_lines
from shared.cli.render import session_lines
from shared.errors import InvalidInput
from tests.odd_shapes import odd_requests, odd_transcripts

TRANSCRIPTS = odd_transcripts()
REQUESTS = odd_requests()


@pytest.mark.parametrize("messages", [c[3] for c in TRANSCRIPTS], ids=[c[0] for c in TRANSCRIPTS])
@pytest.mark.parametrize("live", [True, False], ids=["live", "archived"])
def test_a_transcript_prints_whatever_its_values(messages: list[dict[str, Any]], live: bool) -> None:
    lines = session_lines({"sessionId": "ses_x", "status": "running", "live": live, "messages": messages})
    assert "ses_x" in lines[0] and len(lines) > 2  # the header, then the messages


@pytest.mark.parametrize("request_", [c[1] for c in REQUESTS], ids=[c[0] for c in REQUESTS])
def test_a_request_prints_with_the_command_that_answers_it(request_: dict[str, Any]) -> None:
    lines = pending_lines({"sessionId": "ses_1a2b3c4d5e6fABCDEFGHIJklmn", "pending": [request_]})
    assert any(f"{request_['id']}" in line for line in lines)
    assert any("answer: opencode-sessions" in line for line in lines)


@pytest.mark.parametrize("request_", [c[1] for c in REQUESTS], ids=[c[0] for c in REQUESTS])
def test_an_answer_to_any_question_is_taken_or_refused_with_a_reason(request_: dict[str, Any]) -> None:
    """`answer --choice Red --choice S`: taken when the questions still offer them, else the clear error of exit 2."""
    choices = [["Red"], ["S"]]
    try:
        assert parse_choices(request_, choices) == choices
    except InvalidInput as exc:
        assert "question" in str(exc)
