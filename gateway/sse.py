"""Server-Sent Events framing — pure: an event name, an id and a JSON payload become bytes."""

from __future__ import annotations

import re

RETRY_MS = 3000
# Characters some client ends a line at: SSE's own (\n, \r) and the rest of Python's str.splitlines() set,
# which other line splitters share in part (U+2028/U+2029 in JavaScript, U+0085 in Unicode line breaking).
# Raw inside `data:`, one would let session text forge an event; inside JSON, `\uXXXX` is the same character.
LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def format_event(name: str, data: str, event_id: int | str | None = None) -> bytes:
    """One event; `data` is JSON text, whose line breaks (only ever inside strings) are sent escaped."""
    head = f"event: {name}\n" if event_id is None else f"id: {event_id}\nevent: {name}\n"
    return f"{head}data: {LINE_BREAKS.sub(_escape, data)}\n\n".encode()


def retry_line(retry_ms: int = RETRY_MS) -> bytes:
    """Tells EventSource how long to wait before reconnecting."""
    return f"retry: {retry_ms}\n\n".encode()


def ping(now_ms: int) -> bytes:
    """A named event, not a comment: browsers' EventSource can observe it, and proxies see traffic."""
    return format_event("ping", f'{{"time":{now_ms}}}')


def token_expired(expired_at: int) -> bytes:
    """The last event of a stream whose token expired: the client gets a fresh token and resumes (Last-Event-ID)."""
    return format_event("token-expired", f'{{"error":"token expired","exp":{expired_at}}}')
