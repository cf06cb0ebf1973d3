"""Headers every gateway answer carries unless its route set its own: what it holds is for the token's bearer alone.

Was: the JSON answers (sessions, lists, usage, metrics, and the errors) had no `Cache-Control`, so a browser or a
proxy could keep a session read with one token and serve it again after a logout or to the next user of a shared
cache; nor `X-Content-Type-Options`, so an old browser could sniff a session's JSON as HTML.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULTS = (("cache-control", "no-store"), ("x-content-type-options", "nosniff"))


class DefaultHeaders:
    """Adds each of DEFAULTS a response has not set (the /ui pages and /static files keep their `no-cache`)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_defaults(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in DEFAULTS:
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self._app(scope, receive, send_with_defaults)
