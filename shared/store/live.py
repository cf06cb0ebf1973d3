"""A session's live state in Redis: the typed record of `opencode:session:{id}` and its messages and parts hashes.

This is the only module that knows the state hash's field names and how each one decodes. Messages and parts
are kept exactly as OpenCode returned them; OpenCode orders both by id, so sorting the ids rebuilds its list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.config import DEFAULT_SERVER
from shared.ids import SessionId, TicketId
from shared.models import as_text, dumps, loads, part_ids
from shared.store import keys
from shared.store.connections import store_errors
from shared.usage import Usage

# A hash written by enqueue.lua always has a type; a reader that somehow finds none assumes the default one.
DEFAULT_SESSION_TYPE = "chat"
# What the live list reads of each session (one HMGET each), and what `status` counts read.
SUMMARY_FIELDS = (
    "sessionId",
    "ticketId",
    "sessionType",
    "status",
    "title",
    "error",
    "startedAt",
    "updatedAt",
    "seq",
    "usage",
    "server",
    "directory",
    "pending",
)
STATUS_FIELD = "status"

RawHash = Mapping[bytes, bytes] | Mapping[str, str] | Mapping[bytes | str, bytes | str | None]


def _int_or_zero(text: str | None) -> int:
    """An integer (a time in ms, `seq`), as another backend may have written it (README: job wire format): one
    that is no integer reads as unset. Was: a ValueError for every reader of the session, its tracker and the
    gateway, and the session's end itself failed on it (it was claimed and crashed again, forever)."""
    try:
        return int(text) if text else 0
    except ValueError:
        return 0


def json_or(text: str | None, kind: type, default: Any) -> Any:
    """A JSON field another backend may have written: one that is not JSON of the right kind reads as `default`."""
    if not text:
        return default
    try:
        value = loads(text)
    except ValueError:
        return default
    return value if isinstance(value, kind) else default


def _text(raw: RawHash) -> dict[str, str]:
    return {as_text(k): as_text(v) for k, v in raw.items() if v is not None}


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveState:
    """The scalar fields of one live session. Empty strings in Redis are None here; numbers are ints (0 if absent)."""

    session_id: SessionId
    session_type: str = DEFAULT_SESSION_TYPE
    status: str = "pending"
    ticket_id: TicketId | None = None
    title: str | None = None
    error: str | None = None
    started_at: int = 0
    updated_at: int = 0
    current_tool_calls: list[Any] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    seq: int = 0
    usage: Usage = field(default_factory=Usage)
    server: str | None = None  # the OpenCode server's name; None: the default one
    directory: str | None = None  # sent as `?directory=` on every OpenCode call for the session
    pending: list[Any] = field(default_factory=list)  # requests waiting for a person (status `waiting`)

    @property
    def place(self) -> tuple[str | None, str | None]:
        """Where the session runs: (server, directory)."""
        return self.server, self.directory

    @classmethod
    def decode(cls, raw: RawHash) -> LiveState | None:
        """The state from the hash (or the SUMMARY_FIELDS of it); None when the hash is gone."""
        text = _text(raw)
        if "sessionId" not in text:
            return None
        return cls(
            session_id=SessionId(text["sessionId"]),
            session_type=text.get("sessionType") or DEFAULT_SESSION_TYPE,
            status=text.get("status") or "pending",
            ticket_id=TicketId(text["ticketId"]) if text.get("ticketId") else None,
            title=text.get("title") or None,
            error=text.get("error") or None,
            started_at=_int_or_zero(text.get("startedAt")),
            updated_at=_int_or_zero(text.get("updatedAt")),
            current_tool_calls=json_or(text.get("currentToolCalls"), list, []),
            metadata=json_or(text.get("metadata"), dict, None),
            seq=_int_or_zero(text.get("seq")),
            usage=Usage.from_json(json_or(text.get("usage"), dict, None)),
            server=text.get("server") or None,
            directory=text.get("directory") or None,
            pending=json_or(text.get("pending"), list, []),
        )

    def encode(self) -> dict[str, str]:
        """The hash as enqueue.lua writes it; the script itself sets `seq` and `updatedAt` (Redis's clock)."""
        fields = {
            "sessionId": self.session_id,
            "ticketId": self.ticket_id or "",
            "sessionType": self.session_type,
            "status": self.status,
            "title": self.title or "",
            "error": self.error or "",
            "startedAt": str(self.started_at),
            "currentToolCalls": dumps(self.current_tool_calls),
            "metadata": dumps(self.metadata),
            "pending": dumps(self.pending),
        }
        return self._place_fields() | fields | self._usage_field()

    def _usage_field(self) -> dict[str, str]:
        """`usage`, when there is some: a revived session's from its archive (a new one's is zero, as before)."""
        return {"usage": dumps(self.usage.to_json())} if self.usage != Usage() else {}

    def _place_fields(self) -> dict[str, str]:
        """`server` and `directory`, written only when the session names them (a default session's hash is as
        it always was)."""
        return {k: v for k, v in (("server", self.server), ("directory", self.directory)) if v}

    def index_event(self, event: str) -> str:
        """Body of a live-index change on `opencode:sessions:updates` (appeared / status / ended)."""
        return dumps(
            {
                "type": event,
                "sessionId": self.session_id,
                "ticketId": self.ticket_id,
                "sessionType": self.session_type,
                "status": self.status,
                "title": self.title,
                "startedAt": self.started_at,
                "updatedAt": self.updated_at,
                "pending": self.pending,
            }
        )

    def summary(self) -> dict[str, Any]:
        """The session as the live list shows it: `to_session` without messages, tool calls and metadata (one
        list of fields, in the same order)."""
        return {k: v for k, v in self.to_session([]).items() if k not in _DETAIL_FIELDS}

    def to_session(self, messages: list[Any]) -> dict[str, Any]:
        """The session object clients see (gateway, SSE snapshot, CLI), with its messages."""
        return {
            "sessionId": self.session_id,
            "ticketId": self.ticket_id,
            "sessionType": self.session_type,
            "status": self.status,
            "title": self.title,
            "messages": messages,
            "currentToolCalls": self.current_tool_calls,
            "error": self.error,
            "startedAt": self.started_at,
            "updatedAt": self.updated_at,
            "metadata": self.metadata,
            "seq": self.seq,
            "live": True,
            "usage": self.usage.to_json(),
            "server": self.server or DEFAULT_SERVER,
            "directory": self.directory,
            "pending": self.pending,
        }


_DETAIL_FIELDS = frozenset({"messages", "currentToolCalls", "metadata"})  # in a session, not in a list row


def encode_change(
    updated_at: int,
    *,
    status: str | None = None,
    error: str | None = None,
    tool_calls: list[Any] | None = None,
    usage: Usage | None = None,
    pending: list[Any] | None = None,
) -> tuple[dict[str, str], str]:
    """What one apply.lua call writes to the hash, and the `state` object its update event carries.

    `error` is written with a status change only (a new status clears the old error).
    """
    state: dict[str, Any] = {"updatedAt": updated_at}
    fields = {"updatedAt": str(updated_at)}
    if status is not None:
        state["status"] = fields["status"] = status
        state["error"] = error
        fields["error"] = error or ""
    if tool_calls is not None:
        state["currentToolCalls"] = tool_calls
        fields["currentToolCalls"] = dumps(tool_calls)
    if usage is not None:
        state["usage"] = usage.to_json()
        fields["usage"] = dumps(state["usage"])
    if pending is not None:
        state["pending"] = pending
        fields["pending"] = dumps(pending)
    return fields, dumps(state)


@dataclass(frozen=True, slots=True)
class LiveRecord:
    """All three hashes of a live session, read at one seq: the state, message infos by id, parts by key."""

    state: LiveState
    infos: dict[str, Any]
    parts: dict[str, Any]

    def messages(self) -> list[Any]:
        """OpenCode's message list (`{info, parts}` each), rebuilt in its order."""
        by_message: dict[str, list[Any]] = {}
        for key in sorted(self.parts):
            by_message.setdefault(part_ids(key)[0], []).append(self.parts[key])
        return [{"info": self.infos[mid], "parts": by_message.get(mid, [])} for mid in sorted(self.infos)]

    def to_session(self) -> dict[str, Any]:
        return self.state.to_session(self.messages())


async def _read_hashes(redis: Redis, session_id: SessionId) -> tuple[LiveState | None, dict[Any, Any], dict[Any, Any]]:
    """One MULTI, so the three hashes are read at the same seq: the state (None without live state), the raw
    message infos and parts."""
    with store_errors("Redis"):
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.session(session_id))
            pipe.hgetall(keys.session_messages(session_id))
            pipe.hgetall(keys.session_parts(session_id))
            fields, infos, parts = await pipe.execute()
    return (LiveState.decode(fields) if fields else None), infos, parts


async def read_record(redis: Redis, session_id: SessionId) -> LiveRecord | None:
    """The three hashes at one seq, decoded; None when the session has no live state."""
    state, infos, parts = await _read_hashes(redis, session_id)
    if state is None:
        return None
    return _decoded(state, infos, parts)


def _decoded(state: LiveState, infos: dict[Any, Any], parts: dict[Any, Any]) -> LiveRecord:
    return LiveRecord(
        state,
        {as_text(k): loads(v) for k, v in infos.items()},
        {as_text(k): loads(v) for k, v in parts.items()},
    )


async def read_session_json(redis: Redis, session_id: SessionId) -> dict[str, Any] | None:
    """The session object for clients (the gateway's snapshots and reads), its `messages` the stored JSON joined as
    it is (an orjson.Fragment), never decoded; None when the session has no live state.

    Decoded, a session's messages take ~3-4 times their JSON's size in objects, and took ~1 s of the event loop per
    30 MB: every stream opened on a long session paid both, and kept the objects as long as it stayed open (a reload
    storm of 10 clients on a 27 MB session held 1.2 GB). Its `orjson.dumps` is the same JSON. When another field
    holds what orjson refuses (a lone surrogate in a tool call, an integer past 64 bits), whose writing falls back
    to the standard library, which cannot write a Fragment, the messages are decoded as before."""
    state, infos, parts = await _read_hashes(redis, session_id)
    if state is None:
        return None
    session = state.to_session([])
    try:
        orjson.dumps(session)
    except orjson.JSONEncodeError:
        return _decoded(state, infos, parts).to_session()
    session["messages"] = messages_json(infos, parts)
    return session


def messages_json(infos: Mapping[Any, bytes], parts: Mapping[Any, bytes]) -> orjson.Fragment:
    """OpenCode's message list (`[{info, parts}]`, in LiveRecord.messages' order) from the stored JSON of its infos
    and parts, in one join: the stored values are referenced, never copied but into the result."""
    by_message: dict[str, list[bytes]] = {}
    for key in sorted(parts, key=as_text):
        by_message.setdefault(part_ids(as_text(key))[0], []).append(parts[key])
    pieces = [b"["]
    for key in sorted(infos, key=as_text):
        pieces += (b'{"info":' if len(pieces) == 1 else b',{"info":', infos[key], b',"parts":[')
        for index, part in enumerate(by_message.get(as_text(key), ())):
            pieces += (b",", part) if index else (part,)
        pieces.append(b"]}")
    pieces.append(b"]")
    return orjson.Fragment(b"".join(pieces))
