"""Server-Sent Events framing — pure: an event name, an id and a JSON payload become bytes."""

from __future__ import annotations

RETRY_MS = 3000


def format_event(name: str, data: str, event_id: int | str | None = None) -> bytes:
    """One event; `data` is JSON text without newlines (ours is always compact)."""
    head = f"event: {name}\n" if event_id is None else f"id: {event_id}\nevent: {name}\n"
    return f"{head}data: {data}\n\n".encode()


def retry_line(retry_ms: int = RETRY_MS) -> bytes:
    """Tells EventSource how long to wait before reconnecting."""
    return f"retry: {retry_ms}\n\n".encode()


def ping(now_ms: int) -> bytes:
    """A named event, not a comment: browsers' EventSource can observe it, and proxies see traffic."""
    return format_event("ping", f'{{"time":{now_ms}}}')
