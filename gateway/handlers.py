"""Our errors become JSON `{"error", "detail"}` with the right status; the codes live here, not on the errors."""

from __future__ import annotations

import structlog
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.stream_slots import TooManyStreams
from shared.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    OpenCodeError,
    SessionLayerError,
    Unauthorized,
    Unavailable,
)
from shared.json_response import JSONResponse

log = structlog.get_logger(__name__)

STATUS_CODES: dict[type[SessionLayerError], int] = {
    InvalidInput: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooManyStreams: 429,
    OpenCodeError: 502,
    Unavailable: 503,
}


def status_for(exc: SessionLayerError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return 500


async def session_layer_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SessionLayerError)
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status >= 500:
        log.warning("request_failed", path=request.url.path, error=exc.message)
    return JSONResponse({"error": exc.message, "detail": exc.detail}, status_code=status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail, "detail": None}, status_code=exc.status_code, headers=exc.headers)


async def pool_exhausted(request: Request, exc: Exception) -> Response:
    """Every PostgreSQL connection of the pool stayed busy past its timeout: a 503 to retry, not a crash."""
    log.warning("request_failed", path=request.url.path, error="no PostgreSQL connection free in time")
    return JSONResponse({"error": "PostgreSQL is busy: no connection free in time", "detail": None}, status_code=503)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("request_crashed", path=request.url.path)
    return JSONResponse({"error": "internal error", "detail": None}, status_code=500)


EXCEPTION_HANDLERS = {
    SessionLayerError: session_layer_error,
    HTTPException: http_error,
    PoolTimeout: pool_exhausted,
    Exception: unexpected_error,
}
