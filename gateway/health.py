"""/healthz (the process and its background tasks run), /readyz (Redis and PostgreSQL answer), /metrics."""

from __future__ import annotations

import anyio
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.liveness import Liveness
from gateway.state import GatewayState
from shared.errors import SessionLayerError
from shared.store.connections import store_errors

log = structlog.get_logger(__name__)

READY_TIMEOUT_S = 2.0


async def healthz(request: Request) -> JSONResponse:
    """503 once a background task died (gateway/liveness.py): the process is about to exit, or should be killed."""
    liveness = request.app.state.liveness
    assert isinstance(liveness, Liveness)
    if liveness.failure is not None:
        return JSONResponse({"status": "failed", "reason": liveness.failure}, status_code=503)
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    state = GatewayState.of(request)
    checks: dict[str, str] = {}
    try:
        with anyio.fail_after(READY_TIMEOUT_S), store_errors("Redis"):
            await state.redis.ping()
        checks["redis"] = "ok"
    except (SessionLayerError, TimeoutError) as exc:
        checks["redis"] = _failed("redis", exc)
    try:
        with anyio.fail_after(READY_TIMEOUT_S), store_errors("PostgreSQL"):
            async with state.pool.connection(timeout=READY_TIMEOUT_S) as conn:
                await conn.execute("SELECT 1")
        checks["postgres"] = "ok"
    except (SessionLayerError, TimeoutError) as exc:
        checks["postgres"] = _failed("postgres", exc)
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


def _failed(check: str, exc: Exception) -> str:
    """What failed, for anyone (`/readyz` needs no token): the error's head, `PostgreSQL is unreachable`; its
    details go to the log. Was: the driver's whole message, naming the store's address, port and login role."""
    message = getattr(exc, "message", None) or "timed out"
    log.warning("ready_check_failed", check=check, error=message)
    return message.split(":", 1)[0]


async def metrics(request: Request) -> Response:
    state = GatewayState.of(request)
    state.auth.require_admin(request)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
