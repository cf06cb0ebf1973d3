"""A replica's lease on a session: the `epoch:replica` token claim.lua writes and every fenced write carries."""

from __future__ import annotations

from dataclasses import dataclass

from shared.ids import SessionId


@dataclass(frozen=True, slots=True)
class Lease:
    """Who owns a session; `epoch` (the token's first half) also fences the owner's PostgreSQL writes."""

    session_id: SessionId
    token: str
    epoch: int

    @classmethod
    def from_token(cls, session_id: SessionId, token: str) -> Lease:
        return cls(session_id, token, int(token.split(":", 1)[0]))


@dataclass(frozen=True, slots=True)
class FairShare:
    """How many jobs a claim may take beyond a fixed batch: an equal part of all jobs among the replicas whose
    heartbeat is no older than `live_since_ms`, less the `held` the claiming replica has, but at least `least`.

    A fixed batch alone made a takeover slow: the one survivor of a replica holding 8,000 sessions took 160 ticks.
    """

    least: int
    held: int
    live_since_ms: int
