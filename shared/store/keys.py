"""Every Redis key and channel name, one small function each; ids must already be parsed (shared.ids)."""

from __future__ import annotations

from shared.ids import SessionId, TicketId

PREFIX = "opencode"
QUEUE = f"{PREFIX}:queue"  # ZSET session -> epoch ms at which it may next be claimed
LIVE_INDEX = f"{PREFIX}:sessions:live"  # ZSET session -> startedAt ms: every session with live state
LIVE_UPDATES = f"{PREFIX}:sessions:updates"  # channel: a live session appeared, changed status, ended
POLLERS = f"{PREFIX}:pollers"  # ZSET replica id -> last heartbeat ms
RECONCILE_LOCK = f"{PREFIX}:queue:reconcile-lock"  # one replica at a time runs the PostgreSQL backstop
JOB_REVS = f"{PREFIX}:queue:revs"  # HASH session -> its job's promptsRev: one read a tick tells a replica what changed


def session(session_id: SessionId) -> str:
    """Hash of the scalar state fields (status, seq, timestamps, currentToolCalls…)."""
    return f"{PREFIX}:session:{session_id}"


def session_messages(session_id: SessionId) -> str:
    """Hash messageID -> the message's `info` JSON, exactly as OpenCode returned it."""
    return f"{PREFIX}:session:{session_id}:messages"


def session_parts(session_id: SessionId) -> str:
    """Hash `messageID/partID` -> the part JSON as OpenCode returned it (a text part with its `text` last)."""
    return f"{PREFIX}:session:{session_id}:parts"


def ticket_active(ticket_id: TicketId) -> str:
    return f"{PREFIX}:ticket:{ticket_id}:active"


def updates(session_id: SessionId) -> str:
    return f"{PREFIX}:updates:{session_id}"


def job(session_id: SessionId) -> str:
    """Hash of the queued job: who asked for what; never holds live state."""
    return f"{PREFIX}:queue:job:{session_id}"


def prompts(session_id: SessionId) -> str:
    """List of prompts (JSON) waiting for delivery to OpenCode, oldest first."""
    return f"{PREFIX}:queue:prompts:{session_id}"


def lease(session_id: SessionId) -> str:
    """String `epoch:replica` with a PX TTL: who owns the session, and the fencing token of its writes."""
    return f"{PREFIX}:lease:{session_id}"


def poller(replica_id: str) -> str:
    """Hash of a replica's heartbeat (started, last beat, sessions held), expiring when it stops beating."""
    return f"{PREFIX}:poller:{replica_id}"


def state_keys(session_id: SessionId) -> tuple[str, str, str]:
    return session(session_id), session_messages(session_id), session_parts(session_id)
