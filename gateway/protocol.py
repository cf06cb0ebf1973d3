"""uvicorn's h11 protocol with a deadline on request headers and on writes: a client that sends nothing, or half a
request, or stops reading what it is sent, is disconnected instead of holding a connection (and a file
descriptor, and its unsent bytes) forever.

uvicorn closes a connection idle between requests (`timeout_keep_alive`) but arms nothing while it waits for
the first request, nor once part of a request has arrived. The deadline runs from the connection's start and
from the first bytes of each later request, and ends when h11 has the whole request line and headers.

The write deadline runs while the transport's buffer is over its high-water mark (writing is paused: the client
reads slower than it is sent, or not at all) and ends when the client has drained it; a client that has not by
then is aborted. Its stream ends, and it resumes with Last-Event-ID when it reconnects.

The answers uvicorn writes itself, a 400 to a request h11 cannot read (malformed, or headers past
GATEWAY_MAX_HEADER_BYTES) and a 503 past GATEWAY_MAX_CONNECTIONS, are JSON `{"error", "detail"}` like the app's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.h11_impl import H11Protocol

from shared.models import dumps

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_WRITE_TIMEOUT_S = 30.0


class HeaderTimeoutProtocol(H11Protocol):
    header_timeout_s = DEFAULT_HEADER_TIMEOUT_S
    write_timeout_s = DEFAULT_WRITE_TIMEOUT_S
    _header_timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeout(
        cls, header_timeout_s: float, write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
    ) -> type[HeaderTimeoutProtocol]:
        return type(cls.__name__, (cls,), {"header_timeout_s": header_timeout_s, "write_timeout_s": write_timeout_s})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn refuses past the limit with its own text/plain 503: the check is made here instead (_limited)
        self._concurrency, self.limit_concurrency = self.limit_concurrency, None
        self._app = self.app
        self.app = self._limited

    async def _limited(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """uvicorn's check (this request's own task now counted among the tasks), with a JSON 503."""
        limit = self._concurrency
        if limit is None or (len(self.connections) < limit and len(self.tasks) <= limit):
            await self._app(scope, receive, send)
            return
        self.logger.warning("Exceeded concurrency limit.")
        body = _error_body("the gateway serves GATEWAY_MAX_CONNECTIONS connections already: retry later")
        headers = [*_json_headers(body), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 cannot read, with a JSON body."""
        body = _error_body("invalid HTTP request: malformed, or its headers pass GATEWAY_MAX_HEADER_BYTES")
        headers = [*_json_headers(body), (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body)):
            self.transport.write(self.conn.send(event))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            if self._header_timer is None:
                self._arm()  # the first bytes of a new request: its headers are now due
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._write_resumed()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout_s, self._write_late)

    def resume_writing(self) -> None:
        self._write_resumed()
        super().resume_writing()

    def _write_resumed(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_late(self) -> None:
        self._write_timer = None
        if not self.transport.is_closing():
            self.transport.abort()  # close() would wait to flush the very bytes the client does not read

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.transport.close()


def _error_body(message: str) -> bytes:
    return dumps({"error": message, "detail": None}).encode()


def _json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
