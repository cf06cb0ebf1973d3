"""The JSON reads: a session, a ticket's active session and history, the live and archived lists."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.state import GatewayState
from shared.errors import InvalidInput
from shared.ids import parse_session_id, parse_ticket_id
from shared.models import SESSION_TYPES
from shared.sessions import active_for_ticket, archived_sessions, get_session, live_sessions

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidInput(f"{name} must be true or false")
    return raw in ("true", "1")


def _type(request: Request) -> str | None:
    kind = request.query_params.get("type")
    if kind is not None and kind not in SESSION_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(SESSION_TYPES)}")
    return kind


async def read_session(state: GatewayState, session_id: str) -> dict[str, Any]:
    async with state.pool.connection() as conn:
        return await get_session(state.redis, conn, session_id)


async def session(request: Request) -> JSONResponse:
    state = GatewayState.of(request)
    sid = parse_session_id(request.path_params["session_id"])
    scope = state.auth.scope(request)
    if scope is not None and scope.kind == "session" and scope.id != sid:
        state.auth.require_session(request, sid, None)
    found = await read_session(state, sid)
    state.auth.require_session(request, sid, found.get("ticketId"))
    return JSONResponse(found)


async def ticket_active(request: Request) -> JSONResponse:
    state = GatewayState.of(request)
    ticket = parse_ticket_id(request.path_params["ticket_id"])
    state.auth.require_ticket(request, ticket)
    return JSONResponse(await active_for_ticket(state.redis, ticket))


async def ticket_sessions(request: Request) -> JSONResponse:
    state = GatewayState.of(request)
    ticket = parse_ticket_id(request.path_params["ticket_id"])
    state.auth.require_ticket(request, ticket)
    async with state.pool.connection() as conn:
        page = await archived_sessions(
            conn,
            ticket_id=ticket,
            limit=_limit(request),
            before=request.query_params.get("before"),
            include_messages=_flag(request, "messages"),
        )
    return JSONResponse(page)


async def sessions(request: Request) -> JSONResponse:
    """`?live=true`: the live index; otherwise archived sessions, filtered by `type` and `ticket`."""
    state = GatewayState.of(request)
    state.auth.require_admin(request)
    kind = _type(request)
    if _flag(request, "live"):
        return JSONResponse({"sessions": await live_sessions(state.redis, session_type=kind), "nextCursor": None})
    ticket = request.query_params.get("ticket")
    async with state.pool.connection() as conn:
        page = await archived_sessions(
            conn,
            ticket_id=parse_ticket_id(ticket) if ticket is not None else None,
            session_type=kind,
            limit=_limit(request),
            before=request.query_params.get("before"),
            include_messages=_flag(request, "messages"),
        )
    return JSONResponse(page)
