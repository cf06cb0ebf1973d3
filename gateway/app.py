"""create_app(settings): the gateway's routes, middleware, error handlers and lifespan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import RedirectResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import endpoints, health, stream, ui
from gateway.auth import Auth
from gateway.cors import JSONCORSMiddleware
from gateway.fanout import Fanout
from gateway.handlers import EXCEPTION_HANDLERS
from gateway.headers import DefaultHeaders
from gateway.hosts import HostAllowList, allowed_hosts
from gateway.liveness import Liveness
from gateway.metrics import Metrics
from gateway.openapi import openapi
from gateway.state import PING_INTERVAL_S, GatewayState
from gateway.stream_slots import StreamSlots
from shared.config import Settings
from shared.errors import ConfigError
from shared.store.connections import pg_pool, redis_client
from shared.tokens import check_secret

log = structlog.get_logger(__name__)

FANOUT_QUEUE = 1000  # events a client may lag behind before it is sent a fresh snapshot instead


def _auth(settings: Settings) -> Auth:
    """Refuses a placeholder or short secret (ConfigError naming the variable)."""
    if settings.gateway_auth_secret:
        secret = check_secret("GATEWAY_AUTH_SECRET", str(settings.gateway_auth_secret))
        previous = settings.gateway_auth_secret_previous
        if previous:
            return Auth(secret, check_secret("GATEWAY_AUTH_SECRET_PREVIOUS", str(previous)))
        return Auth(secret)
    if settings.gateway_auth:
        raise ConfigError("GATEWAY_AUTH_SECRET is not set: set it, or set GATEWAY_AUTH=off to serve without tokens")
    log.warning("gateway_auth_off", reason="GATEWAY_AUTH=off: every endpoint is open to anyone who can reach it")
    return Auth(None)


def create_app(
    settings: Settings, *, ping_interval_s: float = PING_INTERVAL_S, fanout_queue: int = FANOUT_QUEUE
) -> Starlette:
    """Raises ConfigError when auth is neither configured nor explicitly off."""
    auth = _auth(settings)
    metrics = Metrics()
    liveness = Liveness()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = redis_client(settings.redis_url, max_connections=100)
        fanout = Fanout(
            str(settings.redis_url),
            max_queued=fanout_queue,
            max_bytes=settings.gateway_stream_buffer_bytes,
            metrics=metrics,
        )
        try:
            async with pg_pool(settings.database_url, min_size=1, max_size=10) as pool, anyio.create_task_group() as tg:
                app.state.gateway = GatewayState(
                    redis=redis,
                    pool=pool,
                    fanout=fanout,
                    auth=auth,
                    metrics=metrics,
                    slots=StreamSlots(settings.gateway_max_streams_per_token),
                    ping_interval_s=ping_interval_s,
                    max_response_bytes=settings.gateway_max_response_bytes,
                )
                tg.start_soon(liveness.supervise, "fanout", fanout.run)
                yield
                liveness.stopping = True
                fanout.close()
                tg.cancel_scope.cancel()
        finally:
            await redis.aclose()

    routes = [
        Route("/", lambda request: RedirectResponse("/ui/")),
        Route("/healthz", health.healthz),
        Route("/readyz", health.readyz),
        Route("/metrics", health.metrics),
        Route("/openapi.json", openapi),
        Route("/sessions", endpoints.sessions),
        Route("/sessions/live/stream", stream.live_stream),
        Route("/sessions/{session_id}", endpoints.session),
        Route("/sessions/{session_id}/stream", stream.session_stream),
        Route("/tickets/{ticket_id}/active", endpoints.ticket_active),
        Route("/tickets/{ticket_id}/sessions", endpoints.ticket_sessions),
        Route("/tickets/{ticket_id}/usage", endpoints.ticket_usage_totals),
        *ui.routes(),
    ]
    middleware = [
        Middleware(TimingMiddleware, metrics=metrics),
        Middleware(DefaultHeaders),
        Middleware(HostAllowList, allowed=allowed_hosts(settings)),
        Middleware(
            JSONCORSMiddleware,
            allow_origins=list(settings.gateway_cors_origins),
            allow_methods=["GET"],
            allow_headers=["Authorization", "Last-Event-ID"],
            max_age=600,
        ),
    ]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.state.liveness = liveness
    return app


class TimingMiddleware:
    """Request latency until the response starts (a stream's headers), by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", "unmatched")
                elapsed = time.perf_counter() - started
                self._metrics.request_seconds.labels(route, str(message["status"])).observe(elapsed)
            await send(message)

        await self._app(scope, receive, timed_send)
