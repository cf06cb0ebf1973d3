"""Places: the OpenCode servers and directories this replica has sessions on, each with its own client, status
board and `/event` stream — opened when the first session there is claimed, closed after the last one ends.

The default place (the default server, OPENCODE_DIRECTORY) keeps the worker's own deps (client, boards, router)
for the worker's life, but its `/event` stream too is open only while a session there is held. A server that is
down or slow holds up only its own place: its board and stream fail alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.abc import TaskGroup
from redis.asyncio import Redis

from poller.deps import TrackerDeps
from poller.events import EventRouter
from poller.heartbeat import others_say
from poller.request_board import RequestBoard
from poller.status_board import StatusBoard
from shared.directories import canonical_directory
from shared.errors import SessionLayerError
from shared.ids import SessionId
from shared.models import as_text
from shared.opencode.replies import TurnedAway
from shared.opencode.servers import OpenCodeServers
from shared.store import keys
from shared.store.connections import store_errors
from shared.store.live import json_or

log = structlog.get_logger(__name__)

PlaceKey = tuple[str, str | None]


@dataclass(slots=True)
class Place:
    """One server+directory in use: the trackers' deps there, and how many sessions hold it open."""

    key: PlaceKey
    deps: TrackerDeps
    sessions: int = 0
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class Places:
    """`acquire` before a tracker starts, `release` after it ends; `boards` for the replica tick."""

    def __init__(self, servers: OpenCodeServers, default: TrackerDeps, default_directory: str | None) -> None:
        self._servers = servers
        home = canonical_directory(default_directory) if default_directory else None
        self._default_key: PlaceKey = (servers.default, home)
        self._default = default
        self._places: dict[PlaceKey, Place] = {}
        self._home = Place(self._default_key, default)  # the default place: never dropped, its stream comes and goes

    def key(self, server: str | None, directory: str | None) -> PlaceKey:
        """The session's place; a directory in its one spelling (another backend's job may spell it otherwise)."""
        return self._servers.config(server).name, canonical_directory(directory) if directory else self._default_key[1]

    def acquire(self, key: PlaceKey, tg: TaskGroup, *, max_age_s: float, events: bool) -> TrackerDeps:
        if key == self._default_key:
            self._home.sessions += 1
            if self._home.sessions == 1 and self._default.router is not None:
                self._home.scope = anyio.CancelScope()
                tg.start_soon(self._stream, self._home, self._default.router)
            return self._default
        place = self._places.get(key)
        if place is None:
            opencode = self._servers.client(*key)
            router = EventRouter(opencode) if events else None
            requests = RequestBoard(opencode) if self._default.requests is not None else None
            deps = dataclasses.replace(
                self._default,
                opencode=opencode,
                board=StatusBoard(opencode, max_age_s),
                router=router,
                requests=requests,
                server=key[0],
            )
            place = self._places[key] = Place(key, deps)
            if router is not None:
                tg.start_soon(self._stream, place, router)
            log.info("place_opened", server=key[0], directory=key[1])
        place.sessions += 1
        return place.deps

    async def release(self, key: PlaceKey) -> None:
        if key == self._default_key:
            self._home.sessions -= 1
            if self._home.sessions <= 0:
                self._home.scope.cancel()  # its /event connection closes until a session there is held again
            return
        place = self._places.get(key)
        if place is None:
            return
        place.sessions -= 1
        if place.sessions <= 0:
            del self._places[key]
            place.scope.cancel()  # its /event connection closes
            await self._servers.close_client(*key)
            log.info("place_closed", server=key[0], directory=key[1])

    def boards(self) -> list[StatusBoard]:
        return [place.deps.board for place in self._places.values()]

    def request_boards(self) -> list[RequestBoard]:
        """The permission/question lists of the places open now (the default place's is the worker's own)."""
        return [place.deps.requests for place in self._places.values() if place.deps.requests is not None]

    def routers(self) -> dict[PlaceKey, EventRouter]:
        """The event routers of the places open now (the default place's is the worker's own)."""
        return {key: p.deps.router for key, p in self._places.items() if p.deps.router is not None}

    def held(self) -> dict[PlaceKey, int]:
        """Sessions held per place other than the default one."""
        return {key: place.sessions for key, place in self._places.items()}

    @staticmethod
    async def _stream(place: Place, router: EventRouter) -> None:
        with place.scope:
            await router.run()


Board = StatusBoard | RequestBoard


async def refresh_board(board: Board, turned_away: TurnedAwayLog | None = None) -> None:
    """One place's `GET /session/status` (or its `GET /permission` and `GET /question`); a failure is logged, the
    board keeps what it had. A server that turns the replica away (credentials refused, a redirect) is said once,
    as an error, in `turned_away`, rather than as a warning every tick."""
    try:
        await board.refresh()
    except TurnedAway as exc:
        if turned_away is not None:
            turned_away.failed(board, exc)
        else:
            log.warning("board_failed", board=type(board).__name__, error=exc.message)
    except SessionLayerError as exc:
        log.warning("board_failed", board=type(board).__name__, error=exc.message)
    except RuntimeError:
        if not board.closed:
            raise
        # its place closed (its last session ended) since the list was taken, before or during this refresh
    else:
        if turned_away is not None:
            turned_away.succeeded(board)


class TurnedAwayLog:
    """The servers whose boards are turned away now (a wrong or missing password, a redirect: a setting to fix),
    each logged once as it starts and once as it ends. Was: a `board_failed` warning per board per tick (two a
    second), saying "OpenCode answered GET /session/status with 401: no body", naming no server and no setting."""

    def __init__(self) -> None:
        self._servers: dict[Board, str] = {}  # board -> its server's name (its URL when it has none)

    def failed(self, board: Board, exc: TurnedAway) -> None:
        server = exc.server or exc.url
        if server not in self._servers.values():
            log.error("opencode_turned_away", server=exc.server, url=exc.url, status=exc.status_code, error=exc.message)
        self._servers[board] = server

    def succeeded(self, board: Board) -> None:
        server = self._servers.pop(board, None)
        if server is not None and server not in self._servers.values():
            log.info("opencode_admitted", server=server)

    def keep(self, boards: Iterable[Board]) -> None:
        """Forget the boards of places closed since (a server turned away again later is said again)."""
        for gone in set(self._servers).difference(boards):
            del self._servers[gone]


class BoardRefresher:
    """Starts a refresh of each board that is not still refreshing, and does not wait for any: a slow or hung
    server delays its own boards only, never another server's, the replica's claims or its job revisions.

    They were one round the replica loop waited for: one server whose status request hung stopped every claim
    and every prompt of the replica until the client's timeout.
    """

    def __init__(self) -> None:
        self._refreshing: set[Board] = set()
        self._turned_away = TurnedAwayLog()

    def refresh(self, boards: Iterable[Board], tg: TaskGroup) -> None:
        boards = list(boards)
        self._turned_away.keep(boards)
        for board in boards:
            if board not in self._refreshing:
                self._refreshing.add(board)
                tg.start_soon(self._refresh, board)

    async def _refresh(self, board: Board) -> None:
        try:
            await refresh_board(board, self._turned_away)
        finally:
            self._refreshing.discard(board)


async def session_place(redis: Redis, session_id: SessionId) -> tuple[str | None, str | None]:
    """Where the session runs, from its live state (`server`, `directory`); None: the default."""
    with store_errors("Redis"):
        server, directory = await redis.hmget(keys.session(session_id), ["server", "directory"])
    return as_text(server) if server else None, as_text(directory) if directory else None


async def served_elsewhere(redis: Redis, replica_id: str, server: str, since_ms: int) -> bool:
    """Whether another replica, live since `since_ms`, has `server` in its OPENCODE_SERVERS (its heartbeat's
    `servers`): during a rolling deploy that adds, renames or removes one, its sessions are that replica's to run."""
    listed = await others_say(redis, replica_id, since_ms, "servers")
    return any(server in _names(raw) for raw in listed.values())


def _names(raw: bytes | str | None) -> list[str]:
    """A heartbeat's `servers` (a JSON list of names); none when absent (an older replica) or unreadable."""
    return [n for n in json_or(as_text(raw) if raw else None, list, []) if isinstance(n, str)]
