"""How the CLI writes a session for people: a header, one line per part, tool calls with their status.

`show` prints a whole session at once (`session_lines`); `watch` prints, after each event, only what is new
(`LivePrinter`). Both build every line with the same functions, so a session reads the same in either.
"""

from __future__ import annotations

import json
from typing import Any

from shared.cli.pending import pending_lines
from shared.cli.terminal import echo, one_line
from shared.models import FINAL_STATUSES, list_of, object_of

SKIPPED_PARTS = frozenset({"step-start", "step-finish", "snapshot"})  # OpenCode's bookkeeping: nothing to read
TEXT_PARTS = frozenset({"text", "reasoning"})


def header(session: dict[str, Any]) -> str:
    """`ses_…  running  (live, ask, ticket T-1)`."""
    details = ["live" if session.get("live") else "archived", one_line(session.get("sessionType") or "?")]
    if session.get("ticketId"):
        details.append(f"ticket {one_line(session['ticketId'])}")
    return f"{one_line(session.get('sessionId'))}  {one_line(session.get('status'))}  ({', '.join(details)})"


def text_lead(role: str, kind: str, *, revised: bool = False) -> str:
    """What starts a text or reasoning part's line: `  assistant text: `."""
    return f"  {role:9} {kind}{' (revised)' if revised else ''}: "


def indented(role: str, kind: str, text: str) -> str:
    """Text whose later lines line up under the first, after its lead."""
    return text.replace("\n", "\n" + " " * len(text_lead(role, kind)))


def part_line(role: str, part: dict[str, Any]) -> str | None:
    """The line of a part that is not text: a tool call with its status (and error), or the part's kind."""
    kind = str(part.get("type"))
    if kind in SKIPPED_PARTS:
        return None
    if kind != "tool":
        return f"  {role:9} {one_line(kind)}"
    state = part.get("state") if isinstance(part.get("state"), dict) else {}
    assert isinstance(state, dict)
    status = str(state.get("status") or "?")
    line = f"  {role:9} tool {one_line(part.get('tool'))} [{one_line(status)}]"
    if state.get("title"):
        line += f" {one_line(state['title'])}"
    if status == "error" and state.get("error"):
        line += f": {one_line(state['error'])}"
    return line


def message_error_line(role: str, info: dict[str, Any]) -> str | None:
    error = info.get("error")
    return f"  {role:9} error: {_error_text(error)}" if error else None


def session_error_line(session: dict[str, Any]) -> str | None:
    return f"session error: {one_line(session['error'])}" if session.get("error") else None


def session_lines(session: dict[str, Any]) -> list[str]:
    """A whole session: header, every message's parts and error, then the session's error."""
    lines = [header(session)]
    for role, info, parts in _messages(session):
        for part in parts:
            kind = str(part.get("type"))
            if kind in TEXT_PARTS:
                lines.extend((text_lead(role, kind) + indented(role, kind, str(part.get("text") or "…"))).split("\n"))
            elif (line := part_line(role, part)) is not None:
                lines.append(line)
        if (line := message_error_line(role, info)) is not None:
            lines.append(line)
    if (line := session_error_line(session)) is not None:
        lines.append(line)
    return lines + pending_lines(session)


class LivePrinter:
    """Prints, after each event, only what the terminal has not shown yet; text is written as it grows."""

    def __init__(self) -> None:
        self._status: str | None = None
        self._shown: dict[str, str] = {}  # part id -> the line last printed for it
        self._text: dict[str, str] = {}  # text/reasoning part id -> the text printed so far
        self._errors: set[str] = set()  # message ids whose error was printed
        self._inline: str | None = None  # the part whose text is being written without a newline yet
        self._broken: str | None = None  # the part whose line interrupt() ended: its text goes on below
        self._asked: set[str] = set()  # requests (pending) already printed

    def render(self, session: dict[str, Any], *, final: bool = False) -> None:
        """Print what is new in `session`; `final`: nothing more will come (a half character is printed too)."""
        status = one_line(session.get("status"))
        if self._status is None:
            self._line(header(session))
        elif status != self._status and status not in FINAL_STATUSES:
            self._line(f"status: {status}")
        self._status = status
        for role, info, parts in _messages(session):
            for part in parts:
                self._part(role, part, final)
            message_id = str(info.get("id"))
            if message_id not in self._errors and (line := message_error_line(role, info)) is not None:
                self._errors.add(message_id)
                self._line(line)
        for line in pending_lines(session, self._asked):
            self._line(line)

    def finish(self, session: dict[str, Any]) -> None:
        self.render(session, final=True)
        self._line(f"status: {one_line(session.get('status'))}")
        if (line := session_error_line(session)) is not None:
            self._line(line)

    def interrupt(self) -> None:
        """End a half-written line so that a message can follow on a line of its own; the text goes on below it."""
        if self._inline is not None:
            self._broken = self._inline
            self._end_inline()

    def _line(self, text: str) -> None:
        self._end_inline()
        echo(text)

    def _end_inline(self) -> None:
        if self._inline is not None:
            echo("")
            self._inline = None

    def _part(self, role: str, part: dict[str, Any], final: bool) -> None:
        part_id, kind = str(part.get("id")), str(part.get("type"))
        if kind in TEXT_PARTS:
            text = str(part.get("text") or "")
            if not final and text and "\ud800" <= text[-1] <= "\udbff":
                text = text[:-1]  # half an emoji: its other half comes with the next append, then both are printed
            self._grow(role, part_id, kind, text)
        elif (line := part_line(role, part)) is not None and self._shown.get(part_id) != line:
            self._shown[part_id] = line
            self._line(line)

    def _grow(self, role: str, part_id: str, kind: str, text: str) -> None:
        shown = self._text.get(part_id)
        if not text or text == shown:
            return
        if shown is not None and text.startswith(shown) and self._inline == part_id:
            echo(indented(role, kind, text[len(shown) :]), nl=False)
        elif shown is not None and text.startswith(shown) and self._inline is None and self._broken == part_id:
            echo(" " * len(text_lead(role, kind)) + indented(role, kind, text[len(shown) :]), nl=False)
            self._inline = part_id
        else:
            self._end_inline()
            echo(text_lead(role, kind, revised=shown is not None) + indented(role, kind, text), nl=False)
            self._inline = part_id
        self._text[part_id] = text
        self._broken = None


def _messages(session: dict[str, Any]) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(role, info, parts) of each message; what is not an object where one belongs is passed over, as a part
    of an unknown kind is (`show` reads what other backends wrote too)."""
    result = []
    for message in list_of(session.get("messages")):
        info = object_of(object_of(message).get("info"))
        parts = [part for part in list_of(object_of(message).get("parts")) if isinstance(part, dict)]
        result.append((one_line(info.get("role") or "?"), info, parts))
    return result


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        data = error.get("data") if isinstance(error.get("data"), dict) else {}
        assert isinstance(data, dict)
        text = data.get("message") or error.get("message") or error.get("name") or json.dumps(error)
    else:
        text = error
    return one_line(text)
