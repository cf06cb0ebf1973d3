"""KeepAliveGets against a scripted TCP server that answers byte for byte: reuse, framing, and every way a
connection can end badly (stale, cut mid-reply, silent, cancelled, garbage)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httptools
import pytest

from shared.opencode.keepalive import BodyTooLarge, KeepAliveGets
from tests.helpers import collector_garbage, wait_for

pytestmark = pytest.mark.anyio

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]"

Reply = Callable[[int, bytes], bytes | None]  # (request number on this connection, request head) -> bytes to send


@dataclass
class Scripted:
    """A loopback server: `reply` decides what each request gets (None: say nothing); `close_after` closes a
    connection once it has answered that many requests."""

    reply: Reply
    close_after: int | None = None
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    eofs: int = 0
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            count = 0
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.eofs += 1
                    return
                self.requests.append(head)
                answer = self.reply(count, head)
                count += 1
                if answer is None:
                    await reader.read()  # silent until the client gives up and closes
                    self.eofs += 1
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after is not None and count >= self.close_after:
                    return
        finally:
            self.open_now -= 1
            writer.close()


LISTENERS: list[asyncio.Server] = []


@pytest.fixture(autouse=True)
async def close_listeners() -> AsyncIterator[None]:
    yield
    while LISTENERS:
        LISTENERS.pop().close()


async def started(scripted: Scripted) -> Scripted:
    listener = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    LISTENERS.append(listener)
    scripted.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    return scripted


async def test_requests_share_one_connection_and_carry_the_headers() -> None:
    server = await started(Scripted(lambda n, head: OK))
    gets = KeepAliveGets(server.url + "/base/", headers={"Authorization": "Basic dTpw"})
    for _ in range(3):
        assert await gets.get("/session/ses_1/message?limit=2") == (200, b"[]")
    await gets.aclose()
    assert server.connections == 1
    head = server.requests[0].decode()
    assert head.startswith("GET /base/session/ses_1/message?limit=2 HTTP/1.1\r\n")
    assert f"Host: {server.url.removeprefix('http://')}\r\n" in head
    assert "Authorization: Basic dTpw\r\n" in head and "Accept: application/json\r\n" in head


async def test_chunked_and_close_delimited_bodies_arrive_whole() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n"
    server = await started(Scripted(lambda n, head: chunked))
    gets = KeepAliveGets(server.url)
    assert await gets.get("/a") == (200, b"[1,2]")
    assert await gets.get("/a") == (200, b"[1,2]")
    assert server.connections == 1
    await gets.aclose()

    unframed = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b'"x"' * 10_000
    server = await started(Scripted(lambda n, head: unframed, close_after=1))
    gets = KeepAliveGets(server.url)
    assert await gets.get("/b") == (200, b'"x"' * 10_000)
    assert await gets.get("/b") == (200, b'"x"' * 10_000)
    assert server.connections == 2  # a reply that ends with its connection is not followed on it
    await gets.aclose()


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2000000000\r\n\r\n[",  # said up front: not a byte is read
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + (b"400\r\n" + b"x" * 1024 + b"\r\n") * 8,  # no end
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 5000,  # ends with its connection, if ever
    ],
    ids=["content-length", "chunked", "close-delimited"],
)
async def test_a_body_past_the_bound_is_not_read_and_its_connection_is_dropped(reply: bytes) -> None:
    """A reply that would grow past `max_body_bytes` fails at once (BodyTooLarge), however it is framed and
    however long the server would go on; the next GET takes a new connection and works."""

    def answer(n: int, head: bytes) -> bytes:
        return reply if b"/big" in head else OK

    server = await started(Scripted(answer))
    gets = KeepAliveGets(server.url, max_body_bytes=4096)
    with pytest.raises(BodyTooLarge, match="a body over 4096 bytes"):
        await gets.get("/big")
    assert await gets.get("/small") == (200, b"[]")
    assert server.connections == 2
    exactly = b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n" + b"x" * 4096
    server.reply = lambda n, head: exactly
    assert await gets.get("/at-the-bound") == (200, b"x" * 4096)
    await gets.aclose()


async def test_a_connection_the_server_closed_while_idle_is_replaced_once() -> None:
    server = await started(Scripted(lambda n, head: OK, close_after=1))  # keep-alive promised, then closed
    gets = KeepAliveGets(server.url)
    assert await gets.get("/a") == (200, b"[]")
    await asyncio.sleep(0)  # whether or not the close is seen before the next request, the GET succeeds
    assert await gets.get("/a") == (200, b"[]")
    assert server.connections == 2 and len(server.requests) == 2
    await gets.aclose()


async def test_a_reply_cut_midway_fails_and_is_not_retried() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[1,2"
    server = await started(Scripted(lambda n, head: cut, close_after=1))
    gets = KeepAliveGets(server.url)
    with pytest.raises(OSError):
        await gets.get("/a")
    assert len(server.requests) == 1
    await gets.aclose()


async def test_garbage_is_a_parser_error() -> None:
    server = await started(Scripted(lambda n, head: b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    gets = KeepAliveGets(server.url)
    with pytest.raises(httptools.HttpParserError):
        await gets.get("/a")
    await gets.aclose()


async def test_a_silent_server_times_out_and_the_connection_is_dropped() -> None:
    server = await started(Scripted(lambda n, head: None))
    gets = KeepAliveGets(server.url, timeout_s=0.2)
    with pytest.raises(TimeoutError):
        await gets.get("/a")
    await wait_for(lambda: settled(server.eofs == 1))
    await gets.aclose()


async def test_a_pooled_connection_that_goes_silent_times_out_once() -> None:
    server = await started(Scripted(lambda n, head: OK if len(server.requests) <= 2 else None))
    gets = KeepAliveGets(server.url, timeout_s=0.2)
    assert await asyncio.gather(gets.get("/a"), gets.get("/a")) == [(200, b"[]")] * 2  # two pooled connections
    with pytest.raises(TimeoutError):
        await gets.get("/a")
    assert len(server.requests) == 3  # out of time: not sent again on the other pooled connection
    await gets.aclose()


async def test_a_cancelled_get_drops_its_connection() -> None:
    server = await started(Scripted(lambda n, head: None if len(server.requests) == 1 else OK))
    gets = KeepAliveGets(server.url)
    task = asyncio.ensure_future(gets.get("/a"))
    await wait_for(lambda: settled(len(server.requests) == 1))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: settled(server.eofs == 1))
    assert await gets.get("/a") == (200, b"[]")
    assert server.connections == 2  # the half-answered connection was not reused
    await gets.aclose()


async def test_connections_are_capped() -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        await Scripted.handle(server, reader, writer)

    server = Scripted(lambda n, head: OK)
    listener = await asyncio.start_server(slow, "127.0.0.1", 0)
    LISTENERS.append(listener)
    gets = KeepAliveGets(f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}", max_connections=2)
    tasks = [asyncio.ensure_future(gets.get("/a")) for _ in range(6)]
    await asyncio.sleep(0.05)
    release.set()
    assert await asyncio.gather(*tasks) == [(200, b"[]")] * 6
    assert server.connections == 2 and server.most_open == 2
    await gets.aclose()


async def test_only_http_urls_are_taken() -> None:
    with pytest.raises(ValueError, match="not an http"):
        KeepAliveGets("ftp://example.com")


async def settled(value: bool) -> bool:
    return value


async def test_connections_that_end_leave_nothing_for_the_collector() -> None:
    """A connection's parser calls back into it, so the two refer to each other: unless that is undone when the
    connection ends, every connection closed (a reply cut, garbage, a server that closes, the client's own close)
    stays in memory until a collection walks it, and the poller's collector never walks what it has kept long."""
    closing = await started(Scripted(lambda n, head: OK, close_after=1))
    cut = await started(Scripted(lambda n, head: b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n[", close_after=1))
    garbage = await started(Scripted(lambda n, head: b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            gets = KeepAliveGets(closing.url)
            assert await gets.get("/a") == (200, b"[]")
            await wait_for(lambda: settled(closing.open_now == 0), what="the server's close")
            assert await gets.get("/a") == (200, b"[]")
            await gets.aclose()
            for url, error in ((cut.url, OSError), (garbage.url, httptools.HttpParserError)):
                gets = KeepAliveGets(url)
                with pytest.raises(error):
                    await gets.get("/a")
                await gets.aclose()
            del gets
        servers = (closing, cut, garbage)
        await wait_for(lambda: settled(all(s.open_now == 0 for s in servers)), what="every connection closed")
        await asyncio.sleep(0)  # the client transports' own connection_lost, scheduled as they closed
        assert collector_garbage("shared") == []
    finally:
        gc.enable()
