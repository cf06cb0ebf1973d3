"""Server-Sent Events framing — pure: an event name, an id and a JSON payload become bytes."""

from __future__ import annotations

RETRY_MS = 3000
# Characters some client ends a line at: SSE's own (\n, \r) and the rest of Python's str.splitlines() set,
# which other line splitters share in part (U+2028/U+2029 in JavaScript, U+0085 in Unicode line breaking).
# Raw inside `data:`, one would let session text forge an event; inside JSON, `\uXXXX` is the same character.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# Each as UTF-8 with its escape. In valid UTF-8 (our JSON always is) each sequence is that character and never a
# piece of another (a multi-byte one starts at a lead byte, which no character holds inside), so replacing bytes
# replaces characters: a 9 MB snapshot framed in ~15 ms (was ~55 ms, ~140 ms with many U+2028, by a regular
# expression over its text, on the event loop for each client).
_ESCAPES = tuple((char.encode(), f"\\u{ord(char):04x}".encode()) for char in LINE_BREAKS)


def escape_line_breaks(data: bytes) -> bytes:
    for raw, escaped in _ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def format_event(name: str, data: str | bytes, event_id: int | str | None = None) -> bytes:
    """One event; `data` is JSON (text, or its UTF-8), whose line breaks (only ever inside strings) are sent
    escaped."""
    return escaped_event(name, escape_line_breaks(data.encode() if isinstance(data, str) else data), event_id)


def escaped_event(name: str, escaped: bytes, event_id: int | str | None = None) -> bytes:
    """One event of data whose line breaks are escaped already (escape_line_breaks), as one read's are once for all
    its clients (gateway.session_reads)."""
    head = f"event: {name}\n" if event_id is None else f"id: {event_id}\nevent: {name}\n"
    return b"".join((head.encode(), b"data: ", escaped, b"\n\n"))


def retry_line(retry_ms: int = RETRY_MS) -> bytes:
    """Tells EventSource how long to wait before reconnecting."""
    return f"retry: {retry_ms}\n\n".encode()


def ping(now_ms: int) -> bytes:
    """A named event, not a comment: browsers' EventSource can observe it, and proxies see traffic."""
    return format_event("ping", f'{{"time":{now_ms}}}')


def token_expired(expired_at: int) -> bytes:
    """The last event of a stream whose token expired: the client gets a fresh token and resumes (Last-Event-ID)."""
    return format_event("token-expired", f'{{"error":"token expired","exp":{expired_at}}}')
