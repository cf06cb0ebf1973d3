"""OpenCodeServers: the named OpenCode servers (OPENCODE_SERVERS, or OPENCODE_URL alone as `default`) and one
client per server and directory in use, so every call for a session goes to its server with its `?directory=`."""

from __future__ import annotations

from collections.abc import Sequence

from shared.config import ServerConfig
from shared.directories import canonical_directory, check_directory
from shared.errors import InvalidInput
from shared.ids import parse_text
from shared.opencode.client import OpenCodeClient
from shared.opencode.keepalive import DEFAULT_MAX_BODY_BYTES


def parse_directory(value: object) -> str | None:
    """An absolute directory as OpenCode takes it (`?directory=`), in its one spelling; None is the server's own.
    InvalidInput naming the parameter otherwise (shared.directories)."""
    if value is None:
        return None
    where = parse_text(value, "directory", {"parameter": "directory"})
    try:
        return check_directory(where)
    except ValueError as exc:
        raise InvalidInput(f"directory {exc}", {"parameter": "directory"}) from None


def _canonical(directory: str | None) -> str | None:
    return canonical_directory(directory) if directory else None


class OpenCodeServers:
    """Clients are made on first use and kept until `aclose()`; `default_directory` (OPENCODE_DIRECTORY) is the
    directory of a session that names none."""

    def __init__(
        self,
        servers: Sequence[ServerConfig],
        *,
        timeout_s: float = 10.0,
        max_connections: int = 100,
        default_directory: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self._servers = {server.name: server for server in servers}
        self._max_body_bytes = max_body_bytes
        self.default = servers[0].name
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._default_directory = _canonical(default_directory)
        self._clients: dict[tuple[str, str | None], OpenCodeClient] = {}

    @property
    def names(self) -> list[str]:
        return list(self._servers)

    def config(self, name: object) -> ServerConfig:
        """InvalidInput naming the server when there is none of that name; None is the default server."""
        if name is None:
            name = self.default
        server = self._servers.get(name) if isinstance(name, str) else None  # "" too: no server has that name
        if server is None:
            known = ", ".join(self._servers)
            raise InvalidInput(f"unknown server {name!r}: the servers are {known}", {"parameter": "server"})
        return server

    def client(self, server: str | None, directory: str | None) -> OpenCodeClient:
        config = self.config(server)
        where = _canonical(directory) or self._default_directory
        key = (config.name, where)
        if key not in self._clients:
            self._clients[key] = OpenCodeClient(
                config.url,
                timeout_s=self._timeout_s,
                max_connections=self._max_connections,
                directory=where,
                auth=config.auth,
                max_body_bytes=self._max_body_bytes,
                server=config.name,
            )
        return self._clients[key]

    async def close_client(self, server: str, directory: str | None) -> None:
        """Close and forget one client (its server+directory has no session left here)."""
        client = self._clients.pop((server, _canonical(directory) or self._default_directory), None)
        if client is not None:
            await client.aclose()

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
