"""StateWriter: turns a Delta into one fenced Lua call that writes only what changed, bumps seq and publishes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from poller.diff import NO_CHANGE, Delta
from shared.errors import LeaseLost
from shared.models import dumps, index_event, part_key
from shared.store.connections import store_errors
from shared.store.lease import Lease
from shared.store.lua import Scripts, StateChange


def _now_ms() -> int:
    return int(time.time() * 1000)


class StateWriter:
    """Writes for one session; `writes` counts Redis state writes (an unchanged poll must add none)."""

    def __init__(self, scripts: Scripts, session: Mapping[str, Any]) -> None:
        self._scripts = scripts
        self._session = dict(session)  # sessionId, ticketId, sessionType, title, startedAt, status
        self.writes = 0
        self.seq = 0

    @property
    def status(self) -> str:
        return str(self._session.get("status"))

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
        status_changed = status is not None and status != self._session.get("status")
        if not delta and not status_changed:
            return self.seq
        now = _now_ms()
        state: dict[str, Any] = {"updatedAt": now}
        fields: dict[str, str] = {"updatedAt": str(now)}
        if status_changed:
            state["status"] = fields["status"] = str(status)
            state["error"] = error
            fields["error"] = error or ""
            self._session.update(status=status, updatedAt=now)
        if delta.tool_calls is not None:
            state["currentToolCalls"] = delta.tool_calls
            fields["currentToolCalls"] = dumps(delta.tool_calls)
        infos = {info["id"]: dumps(info) for info in delta.infos}
        parts = {part_key(part): dumps(part) for part in delta.parts}
        change = StateChange(
            fields=fields,
            messages=infos,
            parts=parts,
            removed_messages=delta.removed_messages,
            removed_parts=delta.removed_parts,
            event_state=dumps(state),
            index_event=index_event("status", self._session) if status_changed else "",
        )
        with store_errors("Redis"):
            seq = await self._scripts.apply(lease, change)
        if seq < 0:
            raise LeaseLost(f"lease {lease.token} of {lease.session_id} is no longer current")
        self.writes += 1
        self.seq = seq
        return seq
