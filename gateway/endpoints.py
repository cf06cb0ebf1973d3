"""The JSON reads: a session, a ticket's active session and history, the live and archived lists."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from gateway.query import query_param
from gateway.session_pages import page_response
from gateway.session_reads import SessionRead
from gateway.state import GatewayState
from shared.config import SERVER_NAME
from shared.errors import InvalidInput, NotFound
from shared.ids import SessionId, parse_session_id, parse_ticket_id
from shared.json_response import JSONResponse
from shared.models import SESSION_TYPES
from shared.opencode.servers import parse_directory
from shared.sessions import (
    active_session_id,
    archived_sessions,
    decode_cursor,
    live_sessions,
    read_archived,
    ticket_of,
)
from shared.store.live import read_session_json
from shared.store.transactions import committed
from shared.usage_report import ticket_usage

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
ASCII_NUMBER = re.compile(r"[0-9]{1,3}")
MAX_CURSOR = 200
T = TypeVar("T")


def named(parse: Callable[[str], T], raw: str, name: str) -> T:
    """`parse(raw)`, whose 400 names the parameter (was: no `detail` for an id in the path or `ticket=`)."""
    try:
        return parse(raw)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, {"parameter": name}) from None


def path_id(request: Request, name: str, parse: Callable[[str], T]) -> T:
    return named(parse, request.path_params[name], name)


def _limit(request: Request) -> int:
    raw = query_param(request, "limit")
    if raw is None:
        return DEFAULT_LIMIT
    # ASCII digits only: str.isdigit() and int() also take "²", "١٢" and thousands of digits
    if not ASCII_NUMBER.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}", {"parameter": "limit"})
    return int(raw)


def _before(request: Request) -> str | None:
    """A cursor only as the gateway writes them (`nextCursor`; see decode_cursor)."""
    raw = query_param(request, "before")
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
    raw = (query_param(request, name) or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidInput(f"{name} must be true or false", {"parameter": name})
    return raw in ("true", "1")


def type_filter(request: Request) -> str | None:
    """`type`: one of the session types, or None for all (the lists and the live-list stream)."""
    kind = query_param(request, "type")
    if kind is not None and kind not in SESSION_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(SESSION_TYPES)}", {"parameter": "type"})
    return kind


def _place(request: Request) -> tuple[str | None, str | None]:
    """`server` (a name as OPENCODE_SERVERS spells them) and `directory` (absolute) filters."""
    server = query_param(request, "server")
    if server is not None and not SERVER_NAME.fullmatch(server):
        raise InvalidInput("server must be a server name (a-z 0-9 - _)", {"parameter": "server"})
    return server, parse_directory(query_param(request, "directory"))


async def read_session(state: GatewayState, session_id: str) -> SessionRead:
    """The session, live or archived (NotFound when neither has it); a live one's messages as their stored JSON
    (shared.store.live.read_session_json), in one read shared by the clients that ask for it at once (SessionReads)."""
    sid = parse_session_id(session_id)
    live = await state.reads.read(sid, lambda: read_session_json(state.redis, sid))
    if live is not None:
        return live
    archived = await state.archive_reads.read(sid, lambda: _read_archived(state, sid))
    if archived is None:
        raise NotFound(f"session {sid} not found")
    return archived


async def _read_archived(state: GatewayState, sid: SessionId) -> dict[str, Any] | None:
    """The archive's session, with a pool connection held for it alone (was: held while Redis was read too), and
    its read shared and limited apart from live reads: a slow PostgreSQL holds up no live session's read."""
    async with state.pool.connection() as conn, committed(conn, reads_only=True):
        return await read_archived(conn, sid)


async def read_covered(request: Request, state: GatewayState, sid: str) -> SessionRead:
    """The session, when the request's token covers it: 403 otherwise, a missing session included (Auth)."""
    found = await _covered(request, state, sid, lambda: read_session(state, sid))
    state.auth.require_session(request, sid, found.session.get("ticketId"))
    return found


async def require_covered(request: Request, state: GatewayState, sid: SessionId) -> None:
    """read_covered's answer without the session read: for a HEAD, whose body is never sent."""
    ticket = await _covered(request, state, sid, lambda: ticket_of(state.redis, state.pool, sid))
    state.auth.require_session(request, sid, ticket)


async def _covered(request: Request, state: GatewayState, sid: str, read: Callable[[], Awaitable[T]]) -> T:
    """`read()` for a token that may hold the session: a missing one is the 403 Auth gives, or the 404."""
    state.auth.require_own_session(request, sid)
    try:
        return await read()
    except NotFound:
        state.auth.refuse_missing_session(request, sid)
        raise


async def session(request: Request) -> Response:
    """The session, encoded in a worker thread: a long session's JSON is tens of MB (was: encoded on the event
    loop, ~1 s per 28 MB archived session and client, while every stream of the process waited)."""
    state = GatewayState.of(request)
    sid = path_id(request, "session_id", parse_session_id)
    return await _encoded(await read_covered(request, state, sid))


async def _encoded(found: SessionRead) -> Response:
    return Response(await anyio.to_thread.run_sync(found.json), media_type="application/json")


async def ticket_active(request: Request) -> Response:
    """The ticket's live session, read as `GET /sessions/{id}` reads it: shared, its messages never decoded, encoded
    off the event loop. Was: decoded and encoded on the loop for each client, and the ticket page asks it first, so a
    reload storm of the page read a long session once per client twice (here, then its stream's snapshot)."""
    state = GatewayState.of(request)
    ticket = path_id(request, "ticket_id", parse_ticket_id)
    state.auth.require_ticket(request, ticket)
    sid = await active_session_id(state.redis, ticket, state.pool)
    found = await read_session(state, sid) if sid is not None else None
    if found is None or not found.session["live"]:  # ended between the two reads: archived
        raise NotFound(f"ticket {ticket} has no live session")
    return await _encoded(_of_ticket(found, ticket))


def _of_ticket(found: SessionRead, ticket: str) -> SessionRead:
    """The session, checked to be the ticket's: the pointer is a Redis key any stale or damaged write could leave
    naming another ticket's session (was: served to this ticket's token as is)."""
    if found.session.get("ticketId") != ticket:
        raise NotFound(f"ticket {ticket} has no live session")
    return found


async def ticket_sessions(request: Request) -> Response:
    state = GatewayState.of(request)
    ticket = path_id(request, "ticket_id", parse_ticket_id)
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
    ticket = path_id(request, "ticket_id", parse_ticket_id)
    state.auth.require_ticket(request, ticket)
    async with state.pool.connection() as conn:
        return JSONResponse(await ticket_usage(state.redis, conn, ticket))


async def sessions(request: Request) -> Response:
    """`?live=true`: the live index; otherwise archived sessions, filtered by `type` and `ticket`."""
    state = GatewayState.of(request)
    state.auth.require_admin(request)
    kind = type_filter(request)
    live = _flag(request, "live")
    ticket = query_param(request, "ticket")
    ticket_id = named(parse_ticket_id, ticket, "ticket") if ticket is not None else None
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
