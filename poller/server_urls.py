"""Server URLs: which OpenCode URL each live replica gives each server name (its heartbeat's `serverUrls`).

Replicas given different URLs under one name ask different OpenCode servers for the same sessions, and the one
asking the wrong server gets 404s. Was: it ended every session it claimed there at once, in `error` ("OpenCode no
longer has this session"), and nothing said why. Now a server whose URL another live replica gives otherwise is
*disputed*: logged once per (server, URL) as `server_url_mismatch`, shown by `status`, and a 404 for a session on
it hands the session back, uncounted, rather than end it, so that a replica whose URL has the session takes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

import structlog
from redis.asyncio import Redis

from poller.deps import TrackerDeps
from poller.heartbeat import others_say
from shared.config import ServerConfig
from shared.errors import LeaseLost, NotFound, SessionLayerError
from shared.ids import SessionId
from shared.sessions import parse_server_urls

log = structlog.get_logger(__name__)

Disputes = dict[str, dict[str, list[str]]]  # server -> {another replica's URL for it -> those replicas}


class ServerDisputed(LeaseLost):
    """OpenCode, at this replica's URL for the session's server, has no such session, while another live replica
    has another URL for that server: the lease is handed back, uncounted, for a replica that may find it."""

    def __init__(self, server: str, cause: SessionLayerError) -> None:
        super().__init__(
            f"server {server!r} has another URL on another live replica, and OpenCode at this one's answered "
            f"{cause.message!r}: handed back"
        )


def credential_free(url: str) -> str:
    """The URL without `user:password@`: what a heartbeat may show (settings' URLs have none already)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def own_urls(servers: Iterable[ServerConfig]) -> dict[str, str]:
    """This replica's servers, name -> URL, as its heartbeat writes them."""
    return {server.name: credential_free(server.url) for server in servers}


def find_disputes(mine: Mapping[str, str], others: Mapping[str, Mapping[str, str]]) -> Disputes:
    """Each of our servers another replica gives another URL. A server another replica lacks is no dispute: a
    rolling deploy that adds one (places.served_elsewhere hands those sessions to the replicas that have it)."""
    found: Disputes = {}
    for replica, urls in sorted(others.items()):
        for server, url in urls.items():
            if server in mine and url != mine[server]:
                found.setdefault(server, {}).setdefault(url, []).append(replica)
    return found


async def live_server_urls(redis: Redis, replica_id: str, since_ms: int) -> dict[str, dict[str, str]]:
    """The `serverUrls` of every other replica whose heartbeat is newer than `since_ms` (an older replica's, which
    writes none, reads as empty)."""
    said = await others_say(redis, replica_id, since_ms, "serverUrls")
    return {replica: parse_server_urls(raw) for replica, raw in said.items()}


class ServerUrls:
    """The replica's own URLs and the disputes its last check found; `check` after each heartbeat."""

    def __init__(self, replica_id: str, servers: Iterable[ServerConfig], give_up_s: float) -> None:
        """`give_up_s`: how long a session may be missing at this replica's URL, handed back, before a 404 ends
        it as one ends any session (OPENCODE_RETRY_DEADLINE_MS)."""
        self.replica_id = replica_id
        self.mine = own_urls(servers)
        self.checked = False  # the replica claims nothing before its first check: it could not tell a dispute
        self._disputes: Disputes = {}
        self._give_up_s = give_up_s
        self._missing_since: dict[str, float] = {}  # session -> when this replica first found it missing (monotonic)

    def disputed(self, server: str) -> bool:
        """Whether another live replica gives `server` another URL."""
        return server in self._disputes

    def hands_back(self, server: str, session_id: str) -> bool:
        """Whether a 404 for the session on `server` hands it back rather than end it (TrackerDeps.hands_back): the
        server is disputed, and this replica has not found the session missing for `give_up_s` yet. Was: handed
        back for as long as the dispute lasted, so a session gone from every server went round the replicas every
        tick, `running`, for ever."""
        if not self.disputed(server):
            return False
        now = time.monotonic()
        return now - self._missing_since.setdefault(session_id, now) < self._give_up_s

    async def check(self, redis: Redis, since_ms: int) -> None:
        """Compare with the live replicas' heartbeats; each (server, URL) disputed is said once as it starts, and
        once as it ends, not every beat."""
        found = find_disputes(self.mine, await live_server_urls(redis, self.replica_id, since_ms))
        for server, urls in found.items():
            for url, replicas in urls.items():
                if url not in self._disputes.get(server, {}):
                    log.error(
                        "server_url_mismatch",
                        replica=self.replica_id,
                        server=server,
                        url=self.mine[server],
                        other_url=url,
                        other_replicas=replicas,
                        error=f"OPENCODE_SERVERS gives server {server!r} another URL on other live replicas: "
                        "give every replica the same URL for it (its sessions are handed back, not ended, on a 404)",
                    )
        for server, urls in self._disputes.items():
            for url in set(urls).difference(found.get(server, {})):
                log.info("server_url_mismatch_ended", replica=self.replica_id, server=server, other_url=url)
        self._disputes = found
        self.checked = True
        horizon = time.monotonic() - 2 * self._give_up_s  # sessions ended or found since: forgotten
        self._missing_since = {sid: since for sid, since in self._missing_since.items() if since > horizon}

    async def lacks(self, deps: TrackerDeps, session_id: SessionId) -> bool:
        """Before a claimed session's tracker starts: True when its server is disputed and OpenCode at this
        replica's URL has no such session, so it is handed back untouched. Asked only of disputed servers."""
        if not self.disputed(deps.server):
            return False
        try:
            await deps.opencode.get_session(session_id)
        except NotFound as exc:
            log.info("session_on_disputed_server", session_id=session_id, server=deps.server, error=exc.message)
            return self.hands_back(deps.server, session_id)  # past the bound: the tracker's 404 ends it
        except SessionLayerError:
            return False  # unreachable or odd: the tracker retries as it always does
        return False
