"""How the CLI shows what a session waits on (the live state's `pending`): the request, and the command that
answers it. `show` lists them all; `watch` prints each once, as it arrives."""

from __future__ import annotations

from typing import Any

from shared.answers import parse_request_id
from shared.cli.terminal import one_line
from shared.errors import InvalidInput
from shared.ids import parse_session_id
from shared.models import list_of, object_of

NO_COMMAND = "            answer: none from opencode-sessions: the id is not OpenCode's per_… or que_… form"


def _answerable(session_id: str, request_id: object) -> bool:
    """Ids the answering commands take. Any other stays out of a command line a person pastes into a shell, where a
    `;` or `$(…)` in it would run (one_line shows the request's, escaped, in its own line)."""
    try:
        parse_session_id(session_id)
        parse_request_id(request_id)
    except InvalidInput:
        return False
    return True


def request_lines(session_id: str, entry: dict[str, Any]) -> list[str]:
    """`  waiting   permission per_…: bash echo hello` and the answering command under it."""
    request_id = one_line(entry.get("id"))
    if entry.get("kind") == "permission":
        patterns = " ".join(str(p) for p in list_of(entry.get("patterns")))
        command = object_of(entry.get("metadata")).get("command") or patterns
        lines = [
            f"  waiting   permission {request_id}: {one_line(entry.get('permission'))} {one_line(command)}".rstrip()
        ]
        lines.append(
            f"            answer: opencode-sessions reply {session_id} {request_id} --once|--always|--reject"
            " [--message TEXT]"
            if _answerable(session_id, entry.get("id"))
            else NO_COMMAND
        )
        return lines
    lines = [f"  waiting   question {request_id}:"]
    questions = [object_of(q) for q in list_of(entry.get("questions"))]
    for number, question in enumerate(questions, 1):
        labels = " | ".join(one_line(object_of(o).get("label")) for o in list_of(question.get("options")))
        several = ", several allowed" if question.get("multiple") else ""
        lines.append(f"            {number}. {one_line(question.get('question'))} [{labels}{several}]")
    choices = " ".join("--choice LABEL" for _ in range(len(questions) or 1))
    answer = f"            answer: opencode-sessions answer {session_id} {request_id} {choices} (or --reject)"
    lines.append(answer if _answerable(session_id, entry.get("id")) else NO_COMMAND)
    return lines


def pending_lines(session: dict[str, Any], skip: set[str] | None = None) -> list[str]:
    """Every request the session waits on, but those in `skip` (which gets the ones returned added)."""
    lines = []
    for entry in list_of(session.get("pending")):
        if not isinstance(entry, dict) or (skip is not None and entry.get("id") in skip):
            continue
        lines.extend(request_lines(str(session.get("sessionId")), entry))
        if skip is not None:
            skip.add(str(entry.get("id")))
    return lines


def answered_lines(requests: list[dict[str, Any]]) -> list[str]:
    """An archived session's requests (shared.store.requests), one line each: what was asked and how it ended."""
    lines = []
    for entry in requests:
        asked = entry.get("permission") or "question"
        answer = entry.get("answer") or {}
        given = answer.get("reply") or ("reject" if answer.get("reject") else None)
        if given is None and "answers" in answer:
            given = "; ".join(",".join(str(label) for label in labels) for labels in answer["answers"])
        by = f" by {one_line(entry['answeredBy'])}" if entry.get("answeredBy") else ""
        outcome = entry.get("outcome") or "unanswered"
        given = one_line(given or "-")
        request = f"{one_line(entry.get('kind'))} {one_line(entry.get('id'))}"
        lines.append(f"  request   {request} ({one_line(asked)}): {given}{by} [{one_line(outcome)}]")
    return lines
