"""StateWriter: turns a Delta into one fenced Lua call that writes only what changed, bumps seq and publishes.

Text that only grew by streamed deltas is written as appends (append.lua): the new text alone crosses the
network, to Redis and to subscribers, instead of the whole part each time.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import structlog

from poller.mirror import NO_CHANGE, Delta
from shared.errors import LeaseLost
from shared.models import dumps, part_key, utf16_length
from shared.store.connections import store_errors
from shared.store.lease import Lease
from shared.store.live import LiveState, encode_change
from shared.store.lua import PartAppend, Scripts, StateChange

log = structlog.get_logger(__name__)

APPENDABLE_FIELD = "text"  # the field OpenCode streams; stored last in the part's JSON so it can be appended to
APPEND_REFUSED = -2


def stored_form(part: Any) -> str:
    """The part's JSON as stored: a text-bearing part keeps its `text` last, so an append extends the string."""
    if isinstance(part.get(APPENDABLE_FIELD), str):
        part = {**{k: v for k, v in part.items() if k != APPENDABLE_FIELD}, APPENDABLE_FIELD: part[APPENDABLE_FIELD]}
    return dumps(part)


def _now_ms() -> int:
    return int(time.time() * 1000)


class StateWriter:
    """Writes for one session; `writes` counts Redis state writes (an unchanged poll must add none)."""

    def __init__(self, scripts: Scripts, session: LiveState) -> None:
        self._scripts = scripts
        self._session = session  # what the live-index events say: status and updatedAt follow our writes
        self.writes = 0
        self.seq = 0
        # stored JSON length (bytes) of the text parts this writer wrote: only those are appended to
        self._stored: dict[str, int] = {}

    @property
    def status(self) -> str:
        return self._session.status

    async def apply(
        self,
        lease: Lease,
        delta: Delta = NO_CHANGE,
        *,
        status: str | None = None,
        error: str | None = None,
    ) -> int:
        """Write the delta (and a status change); raises LeaseLost when the fence refuses it.

        Nothing to write (no delta, same status) writes nothing and returns the current seq.
        """
        status_changed = status is not None and status != self._session.status
        if not delta and not status_changed:
            return self.seq
        now = _now_ms()
        if not status_changed and self._appendable(delta):
            seq = await self._append(lease, delta, now)
            if seq != APPEND_REFUSED:
                return seq
        fields, event_state = encode_change(
            now, status=status if status_changed else None, error=error, tool_calls=delta.tool_calls
        )
        if status_changed:
            self._session = dataclasses.replace(self._session, status=str(status), updated_at=now)
        parts = {part_key(part): stored_form(part) for part in delta.parts}
        change = StateChange(
            fields=fields,
            messages={info["id"]: dumps(info) for info in delta.infos},
            parts=parts,
            removed_messages=delta.removed_messages,
            removed_parts=delta.removed_parts,
            event_state=event_state,
            index_event=self._session.index_event("status") if status_changed else "",
        )
        with store_errors("Redis"):
            seq = await self._scripts.apply(lease, change)
        if seq < 0:
            raise LeaseLost(f"lease {lease.token} of {lease.session_id} is no longer current")
        for key, value in parts.items():
            self._stored[key] = len(value.encode())
        for key in delta.removed_parts:
            self._stored.pop(key, None)
        self.writes += 1
        self.seq = seq
        return seq

    def _appendable(self, delta: Delta) -> bool:
        """Only streamed text changed, in parts this writer stored itself (so it knows their stored form)."""
        if not delta.appends or delta.infos or delta.removed_messages or delta.removed_parts:
            return False
        if delta.tool_calls is not None or len(delta.appends) != len(delta.parts):
            return False
        keys = {part_key(part) for part in delta.parts}
        return all(a.key in keys and a.key in self._stored and a.field == APPENDABLE_FIELD for a in delta.appends)

    async def _append(self, lease: Lease, delta: Delta, now: int) -> int:
        """One append.lua call; APPEND_REFUSED when Redis does not hold the parts as this writer stored them."""
        appends = [
            PartAppend(
                key=a.key,
                field=a.field,
                stored_bytes=self._stored[a.key],
                offset=a.offset,
                length=a.offset + utf16_length(a.text),
                escaped=dumps(a.text)[1:-1],
            )
            for a in delta.appends
        ]
        with store_errors("Redis"):
            seq = await self._scripts.append(lease, now, appends)
        if seq == -1:
            raise LeaseLost(f"lease {lease.token} of {lease.session_id} is no longer current")
        if seq == APPEND_REFUSED:
            log.warning("append_refused", parts=[a.key for a in appends])
            for a in appends:
                self._stored.pop(a.key, None)
            return seq
        for a in appends:
            self._stored[a.key] += len(a.escaped.encode())
        self.writes += 1
        self.seq = seq
        return seq
