"""The `Host` allow-list: a request naming another host is refused before any route runs.

A web page can point a name it controls at 127.0.0.1 (DNS rebinding) and then read, as same-origin, whatever
answers there: with GATEWAY_AUTH=off that would be every session. The browser still sends the attacker's name in
`Host`, so only loopback names are accepted by default when auth is off; with auth on any host is (tokens guard
the data), unless GATEWAY_ALLOWED_HOSTS says otherwise. `/healthz` and `/readyz` answer any host: they reveal
nothing, and probes call them by address.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.config import Settings

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
ANY_HOST = ("*",)
UNCHECKED_PATHS = frozenset({"/healthz", "/readyz"})


def allowed_hosts(settings: Settings) -> tuple[str, ...]:
    """GATEWAY_ALLOWED_HOSTS, or its default: loopback names when auth is off, any host when it is on."""
    if settings.gateway_allowed_hosts is not None:
        return settings.gateway_allowed_hosts
    return ANY_HOST if settings.gateway_auth_secret else LOOPBACK_HOSTS


def host_name(header: str) -> str:
    """`Host` without its port, lower case: `example.com:8080` -> `example.com`, `[::1]:80` -> `[::1]`."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


class HostAllowList:
    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self._app = app
        self._allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "*" in self._allowed or scope["path"] in UNCHECKED_PATHS:
            await self._app(scope, receive, send)
            return
        host = host_name(Headers(scope=scope).get("host", ""))
        if host_allowed(host, self._allowed):
            await self._app(scope, receive, send)
            return
        response = JSONResponse(
            {
                "error": f"host {host[:100]!r} is not allowed: add it to GATEWAY_ALLOWED_HOSTS",
                "detail": {"header": "Host"},
            },
            status_code=421,
        )
        await response(scope, receive, send)
