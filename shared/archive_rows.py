"""The `opencode_sessions` row and its conversions; the table's columns are fixed by the host app's schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.ids import SessionId

COLUMNS = "id, ticket_id, session_type, status, messages, metadata, started_at, completed_at, error_message"
# Our bookkeeping inside the metadata column: every prompt with its messageID (so the PostgreSQL backstop can
# re-queue a session whose Redis state was lost) and the fencing epoch of the last owner that wrote the row.
LAYER_KEY = "sessionLayer"


def to_timestamp(epoch_ms: int) -> datetime:
    """The columns are `timestamp` without time zone: we store UTC."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).replace(tzinfo=None)


def to_epoch_ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    return int(value.replace(tzinfo=UTC).timestamp() * 1000)


def layer_of(metadata: Any) -> dict[str, Any]:
    if isinstance(metadata, dict) and isinstance(metadata.get(LAYER_KEY), dict):
        return dict(metadata[LAYER_KEY])
    return {}


def user_metadata(metadata: Any) -> dict[str, Any] | None:
    """The metadata as the caller gave it, without our bookkeeping."""
    if not isinstance(metadata, dict):
        return None
    return {k: v for k, v in metadata.items() if k != LAYER_KEY}


def row_to_session(row: tuple[Any, ...]) -> dict[str, Any]:
    """An archived row in the same shape as live state, with `live: false`."""
    sid, ticket_id, session_type, status, messages, metadata, started_at, completed_at, error_message = row
    layer = layer_of(metadata)
    return {
        "sessionId": SessionId(sid),
        "ticketId": ticket_id,
        "sessionType": session_type,
        "status": status,
        "title": layer.get("title"),
        "messages": messages or [],
        "currentToolCalls": [],
        "error": error_message,
        "startedAt": to_epoch_ms(started_at),
        "updatedAt": to_epoch_ms(completed_at) or to_epoch_ms(started_at),
        "completedAt": to_epoch_ms(completed_at),
        "metadata": user_metadata(metadata),
        "seq": int(layer.get("seq") or 0),
        "live": False,
    }
