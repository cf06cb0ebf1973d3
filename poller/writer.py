"""StateWriter: turns a Delta into one fenced Lua call that writes only what changed, bumps seq and publishes.

A part whose text only grew (streamed deltas, or the part's end) is written as an append (append.lua): the new
text alone crosses the network, to Redis and to subscribers, instead of the whole part each time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import structlog

from poller.mirror import NO_CHANGE, Appended, Delta
from shared.clock import now_ms
from shared.errors import LeaseLost, RedisWentBack
from shared.models import dumps, part_key, utf16_length
from shared.store.connections import store_errors
from shared.store.lease import Lease
from shared.store.live import LiveState, encode_change
from shared.store.lua import PartAppend, Scripts, StateChange
from shared.usage import Usage

log = structlog.get_logger(__name__)

TEXT = "text"  # the field OpenCode streams; stored last in the part's JSON so that an append extends the string
APPEND_REFUSED = -2


def text_prefix(fields: dict[str, Any]) -> str:
    """The stored JSON of a part up to its text's first character: its other fields, then `"text":"`."""
    head = dumps(fields)[:-1]
    return f'{head}{"," if fields else ""}"{TEXT}":"'


def stored_form(part: Any) -> str:
    """The part's JSON as stored: a text-bearing part keeps its `text` last, so an append extends the string."""
    text = part.get(TEXT)
    if not isinstance(text, str):
        return dumps(part)
    return text_prefix({k: v for k, v in part.items() if k != TEXT}) + dumps(text)[1:-1] + '"}'


class _StoredTexts:
    """What this writer knows of each text part's stored JSON: its whole length and its prefix's, in bytes.

    Two dicts of ints rather than an object per part: one object per text write was ~7 % of what each of the
    collector's young collections walked at 8,000 sessions; ints are not the collector's to walk.
    """

    def __init__(self) -> None:
        self._total: dict[str, int] = {}
        self._prefix: dict[str, int] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._total

    def total(self, key: str) -> int:
        return self._total[key]

    def prefix(self, key: str) -> int:
        return self._prefix[key]

    def set(self, key: str, total: int, prefix: int) -> None:
        self._total[key], self._prefix[key] = total, prefix

    def forget(self, key: str) -> None:
        self._total.pop(key, None)
        self._prefix.pop(key, None)


class StateWriter:
    """Writes for one session; `writes` counts Redis state writes (an unchanged poll must add none)."""

    def __init__(self, scripts: Scripts, session: LiveState) -> None:
        self._scripts = scripts
        self._session = session  # what the live-index events say: status and updatedAt follow our writes
        self.writes = 0
        self.seq = session.seq  # the highest seq Redis answered this writer, or held as it loaded: it only counts up
        self._stored = _StoredTexts()  # the text parts this writer stored itself: only those are appended to

    @property
    def status(self) -> str:
        return self._session.status

    @property
    def pending(self) -> list[Any]:
        return self._session.pending

    async def apply(
        self,
        lease: Lease,
        delta: Delta = NO_CHANGE,
        *,
        status: str | None = None,
        error: str | None = None,
        usage: Usage | None = None,
        pending: list[Any] | None = None,
    ) -> int:
        """Write the delta (and a status change, the session's new usage, the `pending` requests); raises LeaseLost
        when the fence refuses it.

        Nothing to write (no delta, same status, usage and pending) writes nothing and returns the current seq.
        Appends go first, in a write of their own; what else changed follows in one more.
        """
        session = self._session
        status = status if status is not None and status != session.status else None
        usage = usage if usage is not None and usage != session.usage else None
        pending = pending if pending is not None and pending != session.pending else None
        if not delta and status is None and usage is None and pending is None:
            return self.seq
        now = now_ms()
        appends = [a for a in delta.appends if a.key in self._stored]
        try:
            return await self._apply(lease, delta, appends, now, status, error, usage, pending)
        except BaseException:
            # Redis may hold part of it (the appends went and the rest failed, or a reply was lost) while the caller's
            # mirror takes none of it: those parts are written whole next time. Was: the part's next append was made
            # to the text Redis held, from the mirror's shorter one ("Slow a" + " answer": `Slow a answer`)
            for appended in appends:
                self._stored.forget(appended.key)
            for part in delta.parts:
                self._stored.forget(part_key(part))
            raise

    async def _apply(
        self,
        lease: Lease,
        delta: Delta,
        appends: list[Appended],
        now: int,
        status: str | None,
        error: str | None,
        usage: Usage | None,
        pending: list[Any] | None,
    ) -> int:
        """apply(): the appends, then the rest. `status`, `usage` and `pending` are given only when they changed,
        and taken as the session's once written (was: before, so that a write that failed was never tried again: the
        next one found nothing changed)."""
        if appends and await self._append(lease, appends, now) != APPEND_REFUSED:
            done = {a.key for a in appends}
            rest = [part for part in delta.parts if part_key(part) not in done]
            delta = dataclasses.replace(delta, parts=rest, appends=())
            if not delta and status is None and usage is None and pending is None:
                return self.seq
        fields, event_state = encode_change(
            now, status=status, error=error, tool_calls=delta.tool_calls, usage=usage, pending=pending
        )
        session = self._session
        if status is not None:
            session = dataclasses.replace(session, status=status, updated_at=now)
        if usage is not None:
            session = dataclasses.replace(session, usage=usage)
        if pending is not None:
            session = dataclasses.replace(session, pending=list(pending), updated_at=now)
        parts = {part_key(part): stored_form(part) for part in delta.parts}
        change = StateChange(
            fields=fields,
            messages={info["id"]: dumps(info) for info in delta.infos},
            parts=parts,
            removed_messages=delta.removed_messages,
            removed_parts=delta.removed_parts,
            event_state=event_state,
            index_event=session.index_event("status") if status is not None or pending is not None else "",
        )
        seq = await self._write(lease, change)
        self._session = session
        for part in delta.parts:
            self._remember(part, parts[part_key(part)])
        for key in delta.removed_parts:
            self._stored.forget(key)
        return seq

    async def name_server(self, lease: Lease, server: str) -> LiveState:
        """Record the server a session that named none runs on; the session as it now is."""
        now = now_ms()
        change = StateChange(
            fields={"server": server, "updatedAt": str(now)},
            messages={},
            parts={},
            removed_messages=(),
            removed_parts=(),
            event_state=dumps({"updatedAt": now, "server": server}),
        )
        seq = await self._write(lease, change)
        self._session = dataclasses.replace(self._session, server=server, updated_at=now)
        return dataclasses.replace(self._session, seq=seq)

    async def _write(self, lease: Lease, change: StateChange) -> int:
        """One fenced apply.lua call, counted; its seq. LeaseLost when the fence refuses it."""
        with store_errors("Redis"):
            seq = await self._scripts.apply(lease, change)
        if seq < 0:
            raise LeaseLost(f"lease {lease.token} of {lease.session_id} is no longer current")
        self._counted(seq)
        return seq

    def _counted(self, seq: int) -> None:
        """A write Redis took: its seq is past every one before, unless Redis went back (RedisWentBack)."""
        if seq <= self.seq:
            raise RedisWentBack(f"Redis answered seq {seq} to a write after seq {self.seq}")
        self.writes += 1
        self.seq = seq

    def _remember(self, part: Any, stored: str) -> None:
        key = part_key(part)
        text = part.get(TEXT)
        if isinstance(text, str):
            total = len(stored.encode())
            self._stored.set(key, total, total - len(dumps(text).encode()))  # the quotes stand for `"}`
        else:
            self._stored.forget(key)

    async def _append(self, lease: Lease, appended: Sequence[Appended], now: int) -> int:
        """One append.lua call; APPEND_REFUSED when Redis does not hold the parts as this writer stored them."""
        appends = [
            PartAppend(
                key=a.key,
                field=TEXT,
                stored_bytes=self._stored.total(a.key),
                prefix_bytes=self._stored.prefix(a.key),
                prefix=text_prefix(a.fields) if a.fields is not None else "",
                offset=a.offset,
                length=a.offset + utf16_length(a.text),
                escaped=dumps(a.text)[1:-1],
            )
            for a in appended
        ]
        with store_errors("Redis"):
            seq = await self._scripts.append(lease, now, appends)
        if seq == -1:
            raise LeaseLost(f"lease {lease.token} of {lease.session_id} is no longer current")
        if seq == APPEND_REFUSED:
            log.warning("append_refused", parts=[a.key for a in appends])
            for a in appends:
                self._stored.forget(a.key)
            return seq
        for a in appends:
            total, old_prefix = self._stored.total(a.key), self._stored.prefix(a.key)
            prefix = len(a.prefix.encode()) if a.prefix else old_prefix
            self._stored.set(a.key, total - old_prefix + prefix + len(a.escaped.encode()), prefix)
        self._counted(seq)
        return seq
