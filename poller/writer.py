"""StateWriter: turns a Delta into one fenced Lua call that writes only what changed, bumps seq and publishes."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from poller.mirror import NO_CHANGE, Delta
from shared.errors import LeaseLost
from shared.models import dumps, part_key
from shared.store.connections import store_errors
from shared.store.lease import Lease
from shared.store.live import LiveState, encode_change
from shared.store.lua import Scripts, StateChange


def _now_ms() -> int:
    return int(time.time() * 1000)


class StateWriter:
    """Writes for one session; `writes` counts Redis state writes (an unchanged poll must add none)."""

    def __init__(self, scripts: Scripts, session: LiveState) -> None:
        self._scripts = scripts
        self._session = session  # what the live-index events say: status and updatedAt follow our writes
        self.writes = 0
        self.seq = 0

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
        pending: list[Any] | None = None,
    ) -> int:
        """Write the delta (and a status change, and the `pending` requests); raises LeaseLost when the fence
        refuses it.

        Nothing to write (no delta, same status, same pending) writes nothing and returns the current seq.
        """
        status_changed = status is not None and status != self._session.status
        pending_changed = pending is not None and pending != self._session.pending
        if not delta and not status_changed and not pending_changed:
            return self.seq
        now = _now_ms()
        fields, event_state = encode_change(
            now,
            status=status if status_changed else None,
            error=error,
            tool_calls=delta.tool_calls,
            pending=pending if pending_changed else None,
        )
        if status_changed:
            self._session = dataclasses.replace(self._session, status=str(status), updated_at=now)
        if pending_changed:
            self._session = dataclasses.replace(self._session, pending=list(pending or []), updated_at=now)
        change = StateChange(
            fields=fields,
            messages={info["id"]: dumps(info) for info in delta.infos},
            parts={part_key(part): dumps(part) for part in delta.parts},
            removed_messages=delta.removed_messages,
            removed_parts=delta.removed_parts,
            event_state=event_state,
            index_event=self._session.index_event("status") if status_changed or pending_changed else "",
        )
        with store_errors("Redis"):
            seq = await self._scripts.apply(lease, change)
        if seq < 0:
            raise LeaseLost(f"lease {lease.token} of {lease.session_id} is no longer current")
        self.writes += 1
        self.seq = seq
        return seq
