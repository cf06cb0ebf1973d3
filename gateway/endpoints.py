"""The JSON reads: a session, a ticket's active session and history, the live and archived lists."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.session_pages import page_response
from gateway.state import GatewayState
from shared.config import SERVER_NAME
from shared.errors import InvalidInput
from shared.ids import parse_session_id, parse_ticket_id
from shared.json_response import JSONResponse
from shared.models import SESSION_TYPES
from shared.opencode.servers import parse_directory
from shared.sessions import (
    active_for_ticket,
    archived_sessions,
    decode_cursor,
    get_session,
    live_sessions,
)
from shared.usage_report import ticket_usage

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
ASCII_NUMBER = re.compile(r"[0-9]{1,3}")
MAX_CURSOR = 200


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    # ASCII digits only: str.isdigit() and int() also take "²", "١٢" and thousands of digits
    if not ASCII_NUMBER.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}", {"parameter": "limit"})
    return int(raw)


def _before(request: Request) -> str | None:
    """A cursor only as the gateway writes them (`nextCursor`; see decode_cursor)."""
    raw = request.query_params.get("before")
    if raw is None:
        return None
    error = InvalidInput("before must be the nextCursor of a page", {"parameter": "before"})
    if len(raw) > MAX_CURSOR:
        raise error
    try:
        decode_cursor(raw)
    except InvalidInput:
        raise error from None
    return raw


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidInput(f"{name} must be true or false", {"parameter": name})
    return raw in ("true", "1")


def type_filter(request: Request) -> str | None:
    """`type`: one of the session types, or None for all (the lists and the live-list stream)."""
    kind = request.query_params.get("type")
    if kind is not None and kind not in SESSION_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(SESSION_TYPES)}", {"parameter": "type"})
    return kind


def _place(request: Request) -> tuple[str | None, str | None]:
    """`server` (a name as OPENCODE_SERVERS spells them) and `directory` (absolute) filters."""
    server = request.query_params.get("server")
    if server is not None and not SERVER_NAME.fullmatch(server):
        raise InvalidInput("server must be a server name (a-z 0-9 - _)", {"parameter": "server"})
    return server, parse_directory(request.query_params.get("directory"))


async def read_session(state: GatewayState, session_id: str) -> dict[str, Any]:
    async with state.pool.connection() as conn:
        return await get_session(state.redis, conn, session_id)


async def session(request: Request) -> JSONResponse:
    state = GatewayState.of(request)
    sid = parse_session_id(request.path_params["session_id"])
    state.auth.require_own_session(request, sid)
    found = await read_session(state, sid)
    state.auth.require_session(request, sid, found.get("ticketId"))
    return JSONResponse(found)


async def ticket_active(request: Request) -> JSONResponse:
    state = GatewayState.of(request)
    ticket = parse_ticket_id(request.path_params["ticket_id"])
    state.auth.require_ticket(request, ticket)
    return JSONResponse(await active_for_ticket(state.redis, ticket))


async def ticket_sessions(request: Request) -> Response:
    state = GatewayState.of(request)
    ticket = parse_ticket_id(request.path_params["ticket_id"])
    state.auth.require_ticket(request, ticket)
    limit, before, include_messages = _limit(request), _before(request), _flag(request, "messages")
    server, directory = _place(request)
    async with state.pool.connection() as conn:
        page = await archived_sessions(
            conn, server=server, directory=directory, ticket_id=ticket, limit=limit, before=before
        )
    return await page_response(state, page, include_messages)


async def ticket_usage_totals(request: Request) -> JSONResponse:
    """What the ticket's sessions used: the total and each session's (a running one's is its live usage)."""
    state = GatewayState.of(request)
    ticket = parse_ticket_id(request.path_params["ticket_id"])
    state.auth.require_ticket(request, ticket)
    async with state.pool.connection() as conn:
        return JSONResponse(await ticket_usage(state.redis, conn, ticket))


async def sessions(request: Request) -> Response:
    """`?live=true`: the live index; otherwise archived sessions, filtered by `type` and `ticket`."""
    state = GatewayState.of(request)
    state.auth.require_admin(request)
    kind = type_filter(request)
    live = _flag(request, "live")
    ticket = request.query_params.get("ticket")
    ticket_id = parse_ticket_id(ticket) if ticket is not None else None
    limit, before, include_messages = _limit(request), _before(request), _flag(request, "messages")
    server, directory = _place(request)
    if live:
        found = await live_sessions(state.redis, session_type=kind, server=server, directory=directory)
        return JSONResponse({"sessions": found, "nextCursor": None})
    async with state.pool.connection() as conn:
        page = await archived_sessions(
            conn,
            server=server,
            directory=directory,
            ticket_id=ticket_id,
            session_type=kind,
            limit=limit,
            before=before,
        )
    return await page_response(state, page, include_messages)
