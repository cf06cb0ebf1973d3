"""What every request handler reaches through the app: the clients and helpers the lifespan opened."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import psycopg_pool
from redis.asyncio import Redis
from starlette.requests import Request

from gateway.auth import Auth
from gateway.fanout import Fanout
from gateway.metrics import Metrics
from gateway.session_reads import SessionReads
from gateway.stream_slots import StreamSlots

PING_INTERVAL_S = 15.0


@dataclass(slots=True)
class GatewayState:
    redis: Redis
    pool: psycopg_pool.AsyncConnectionPool
    fanout: Fanout
    auth: Auth
    metrics: Metrics
    slots: StreamSlots
    ping_interval_s: float = PING_INTERVAL_S
    max_response_bytes: int = 4_194_304
    closing: anyio.Event | None = None
    reads: SessionReads = field(default_factory=SessionReads)  # live sessions, from Redis
    archive_reads: SessionReads = field(default_factory=SessionReads)  # apart: a slow PostgreSQL holds only these

    @classmethod
    def of(cls, request: Request) -> GatewayState:
        state = request.app.state.gateway
        assert isinstance(state, GatewayState)
        return state
