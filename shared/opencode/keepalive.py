"""`KeepAliveGets`: plain HTTP/1.1 GETs over pooled keep-alive connections, parsed by httptools.

The poller's hot path is one GET per session per tick (the message tail, the status map, the request lists):
thousands a second from one process. aiohttp's request path costs 72-75 µs of CPU per GET on this machine kind
(8-64 at once); a protocol that writes one prebuilt request and feeds the reply to httptools (llhttp, the parser
uvicorn uses) costs 29-33 µs (`python -m tests.perf.http_client_bench`). It does only what those GETs need: no
request body, no cookies, no compression, and no redirects: a 3xx is raised as `Redirected`. Everything else stays
on aiohttp (`OpenCodeClient`).

Failures are raised as `OSError` (refused, reset, closed mid-reply), `TimeoutError` (the whole call past
`timeout_s`), `httptools.HttpParserError` (a reply that is not HTTP), `BodyTooLarge` (a body past
`max_body_bytes`, read no further) or `Redirected`; the caller translates them.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import httptools

from shared.opencode.replies import Redirected

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024  # OPENCODE_MAX_RESPONSE_BYTES
# a reply's status line and headers: OpenCode's are a few hundred bytes. httptools keeps a header until it ends, so
# one that never did grew the process for the call's whole timeout (~110 MB in 5 s over loopback, per call)
MAX_HEAD_BYTES = 256 * 1024


class BodyTooLarge(Exception):
    """A reply's body passed the client's bound: its connection is closed rather than read on. One session's list
    grown past any sense must end that session, not take the memory of the process holding thousands."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a body over {limit} bytes")
        self.limit = limit


class _Connection(asyncio.Protocol):
    """One TCP connection: at most one request in flight, its reply handed to `waiter` whole.

    Its parser calls back into it, so the two refer to each other until the connection is lost. Nothing else here
    may hold what refers back to it: a cycle left when a connection ends is freed only by a collection, and the
    poller's collector never walks what has outlived a young collection (poller/main.py).
    """

    def __init__(self, max_body_bytes: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.received = False  # a byte of the current reply arrived: a failure now is not a stale connection
        self.location: str | None = None  # the current reply's Location header: where a redirect points
        self._head_bytes = 0  # bytes of the current reply received before its headers ended
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._max_body_bytes = max_body_bytes
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the reply ends by itself, not at the connection's close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self._parser is None:  # lost already
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            self.close()
            return
        if not self._headers_done and self.waiter is not None:  # the reply's headers have not ended yet
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(httptools.HttpParserError(f"a reply's headers past {MAX_HEAD_BYTES} bytes"))
                self.close()

    def begin(self, waiter: asyncio.Future[tuple[int, bytes, bool]]) -> None:
        """A request is sent: its reply is read from nothing."""
        self.waiter, self.received, self.location, self._head_bytes = waiter, False, None, 0

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._headers_done and not self._framed and self.waiter is not None:
            self.on_message_complete()  # a reply delimited by the connection's close
        else:
            self._fail(exc or ConnectionResetError("the server closed the connection"))
        self._parser = self.transport = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"location":
            self.location = value.decode("latin-1")
        if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True
        if lowered == b"content-length" and value.strip().isdigit() and int(value) > self._max_body_bytes:
            self._too_large()  # said up front: not a byte of it is read

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        if self.waiter is None:  # failed already (too large): what is still in the read buffer is dropped
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body_bytes:
            self._too_large()
            return
        self._body.append(body)

    def _too_large(self) -> None:
        self._fail(BodyTooLarge(self._max_body_bytes))
        self.close()

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        body, self._body, self._body_bytes = b"".join(self._body), [], 0
        assert self._parser is not None  # called back by the parser, or from connection_lost before it is dropped
        status = self._parser.get_status_code()
        keep_alive = self._parser.should_keep_alive() and not self.closed
        self._headers_done = self._framed = False
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body, keep_alive))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        self._body, self._body_bytes = [], 0
        if waiter is not None and not waiter.done():
            # without where it was raised (the parser's frames, which hold this connection); the caller's traceback
            # starts where it awaits
            waiter.set_exception(exc.with_traceback(None))


class KeepAliveGets:
    """GETs to one server, over at most `max_connections` keep-alive connections; `get` returns (status, body)."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        max_connections: int = 100,
        timeout_s: float = 10.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        self._base_path = url.path.rstrip("/")
        host_header = url.netloc.rpartition("@")[2]
        lines = [f"Host: {host_header}", "Accept: application/json", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self._head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._timeout_s = timeout_s
        self._max_body_bytes = max_body_bytes
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._closed = False

    async def get(self, target: str) -> tuple[int, bytes]:
        """GET `target` (a path with its query, already encoded); a reused connection the server had closed
        is retried once on a new one, since nothing of the request was answered."""
        if self._closed:
            raise RuntimeError("the client is closed")
        request = b"GET " + (self._base_path + target).encode("ascii") + b" HTTP/1.1\r\n" + self._head
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        async with self._slots:
            while self._idle:
                connection = self._idle.pop()
                if connection.closed:
                    continue
                try:
                    return await self._exchange(connection, request, deadline)
                except OSError as exc:
                    if connection.received or isinstance(exc, TimeoutError):  # answered in part, or out of time
                        raise
            return await self._exchange(await self._connect(deadline), request, deadline)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def _connect(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        limit = self._max_body_bytes
        host, ssl_context = self._host, self._ssl
        opening = loop.create_connection(
            lambda: _Connection(limit), host, self._port, ssl=ssl_context, server_hostname=host if ssl_context else None
        )
        _, connection = await asyncio.wait_for(opening, max(deadline - loop.time(), 0.0))
        return connection

    async def _exchange(self, connection: _Connection, request: bytes, deadline: float) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[int, bytes, bool]] = loop.create_future()
        connection.begin(waiter)
        assert connection.transport is not None
        connection.transport.write(request)
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            status, body, keep_alive = await waiter
        except BaseException:
            connection.close()  # timed out, cancelled or failed mid-reply: the connection's state is unknown
            raise
        finally:
            timer.cancel()
            # a failure raised here holds this frame in its traceback, and the frame the waiter, which holds the
            # failure: a cycle only a collection frees
            del waiter
        if keep_alive and not self._closed:
            self._idle.append(connection)
        else:
            connection.close()
        if 300 <= status < 400:
            raise Redirected(status, connection.location)
        return status, body


def _expire(waiter: asyncio.Future[tuple[int, bytes, bool]]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
