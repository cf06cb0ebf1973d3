"""How the CLI shows what a session waits on (the live state's `pending`): the request, and the command that
answers it. `show` lists them all; `watch` prints each once, as it arrives."""

from __future__ import annotations

from typing import Any


def request_lines(session_id: str, entry: dict[str, Any]) -> list[str]:
    """`  waiting   permission per_…: bash echo hello` and the answering command under it."""
    request_id = entry.get("id")
    if entry.get("kind") == "permission":
        patterns = " ".join(str(p) for p in entry.get("patterns") or [])
        command = (entry.get("metadata") or {}).get("command") or patterns
        lines = [f"  waiting   permission {request_id}: {entry.get('permission')} {command}".rstrip()]
        lines.append(
            f"            answer: opencode-sessions reply {session_id} {request_id} --once|--always|--reject"
            " [--message TEXT]"
        )
        return lines
    lines = [f"  waiting   question {request_id}:"]
    for number, question in enumerate(entry.get("questions") or [], 1):
        labels = " | ".join(str(o.get("label")) for o in question.get("options") or [])
        several = ", several allowed" if question.get("multiple") else ""
        lines.append(f"            {number}. {question.get('question')} [{labels}{several}]")
    choices = " ".join("--choice LABEL" for _ in entry.get("questions") or [None])
    lines.append(f"            answer: opencode-sessions answer {session_id} {request_id} {choices} (or --reject)")
    return lines


def pending_lines(session: dict[str, Any], skip: set[str] | None = None) -> list[str]:
    """Every request the session waits on, but those in `skip` (which gets the ones returned added)."""
    lines = []
    for entry in session.get("pending") or []:
        if not isinstance(entry, dict) or (skip is not None and entry.get("id") in skip):
            continue
        lines.extend(request_lines(str(session.get("sessionId")), entry))
        if skip is not None:
            skip.add(str(entry.get("id")))
    return lines
