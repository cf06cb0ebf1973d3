"""The OpenCode client against servers and proxies that misbehave: credentials refused, redirects, an `/event`
stream that trickles bytes without ever ending a record."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from shared.config import Secret, ServerConfig
from shared.dev.simulator.server import serve_in_thread
from shared.errors import OpenCodeError, Unavailable, Unreached
from shared.opencode.client import OpenCodeClient
from shared.opencode.servers import OpenCodeServers

pytestmark = pytest.mark.anyio

CONNECTED = b'data: {"id":"evt_1","type":"server.connected","properties":{}}\n\n'


def answering(status: int, headers: dict[str, str] | None = None) -> Starlette:
    """Every request, any method, answered `status` with an empty body (as `opencode serve` answers a 401)."""

    async def endpoint(request: Request) -> Response:
        return Response(b"", status_code=status, headers=headers)

    route = Route("/{path:path}", endpoint, methods=["GET", "POST", "DELETE"])
    return Starlette(routes=[route])


class Recorder:
    """A server that records what reaches it: where a redirect pointed."""

    def __init__(self) -> None:
        self.hits: list[str] = []

    def app(self) -> Starlette:
        async def endpoint(request: Request) -> Response:
            self.hits.append(f"{request.method} {request.url.path}")
            return Response(b'{"id":"ses_elsewhere"}', media_type="application/json")

        return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST", "DELETE"])])


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, str]]:
    recording = Recorder()
    with serve_in_thread(recording.app()) as url:
        yield recording, url


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_name_the_server_and_the_variable_and_may_be_retried(status: int) -> None:
    """Was: `OpenCodeError(401)` "OpenCode answered GET /session/ses_x/message with 401: no body": neither the
    server nor the setting to fix, and a 4xx is "not retryable", so a prompt or an answer it refused ended its
    session at once (poller/prompts.py, poller/answers.py) although nothing was carried out. Now an Unreached (the
    request was refused before OpenCode did anything) naming the server, its URL and where its password is set."""
    with serve_in_thread(answering(status, {"www-authenticate": 'Basic realm="Secure Area"'})) as url:
        servers = OpenCodeServers((ServerConfig("default", url), ServerConfig("repo2", url, Secret("rotated"))))
        try:
            oc = servers.client("repo2", None)
            for call in (oc.messages("ses_x"), oc.prompt_async("ses_x", message_id="msg_x", text="hi")):
                with pytest.raises(Unreached) as caught:
                    await call
                message = caught.value.message
                assert "'repo2'" in message and url in message and str(status) in message
                assert "OPENCODE_SERVERS" in message and "rotated" not in message
            unset = servers.client("default", None)  # no password configured: a 401 says so
            with pytest.raises(Unreached, match="no password is configured" if status == 401 else "forbade"):
                await unset.status()
        finally:
            await servers.aclose()


async def test_a_rate_limit_is_a_request_turned_away_not_a_refusal() -> None:
    """A 429 (a rate limit, a proxy's most likely) was "not retryable": a prompt or an answer it met ended its
    session at once. Nothing was carried out: it is an Unreached, retried until OPENCODE_RETRY_DEADLINE_MS."""
    with serve_in_thread(answering(429)) as url:
        servers = OpenCodeServers((ServerConfig("repo2", url),))
        try:
            with pytest.raises(Unreached, match=r"'repo2' .* with 429 .*limits the rate"):
                await servers.client("repo2", None).prompt_async("ses_x", message_id="msg_x", text="hi")
        finally:
            await servers.aclose()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_not_followed_and_names_where_it_points(status: int, recorder: Any) -> None:
    """Was: GETs (the lean keep-alive client) took the redirect's empty body as the answer ("malformed response:
    unexpected shape"), while the other calls (aiohttp) followed it: a POST's body, the prompt, went wherever the
    proxy pointed, or (301, 302) was turned into a GET there. Now none is followed, and the error names the
    redirect's target and the variable to set."""
    recording, elsewhere = recorder
    with serve_in_thread(answering(status, {"location": f"{elsewhere}/moved"})) as url:
        servers = OpenCodeServers((ServerConfig("repo2", url),))
        try:
            oc = servers.client("repo2", None)
            calls = [
                oc.messages("ses_x"),
                oc.create_session(title="secret title"),
                oc.prompt_async("ses_x", message_id="msg_x", text="a private prompt"),
            ]
            for call in calls:
                with pytest.raises(Unavailable) as caught:
                    await call
                message = caught.value.message
                assert f"redirect to {elsewhere}/moved" in message and "'repo2'" in message
                assert "OPENCODE_SERVERS" in message
        finally:
            await servers.aclose()
    assert recording.hits == []


def trickling() -> Starlette:
    """`/event`: `server.connected`, then a byte every 50 ms for ever, never the end of a record."""

    async def events(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield CONNECTED
            while True:
                await anyio.sleep(0.05)
                yield b"x"

        return StreamingResponse(body(), media_type="text/event-stream")

    return Starlette(routes=[Route("/event", events)])


async def test_an_event_stream_that_trickles_bytes_but_no_record_is_dead() -> None:
    """A proxy (or a broken server) that keeps the connection alive with a byte now and then but never finishes a
    record: OpenCode's heartbeat is a record every 10 s. Was: the read timeout counted bytes, so the stream stayed
    open, `healthy` (the trackers polling only at the slow cadence), for as long as the bytes came: here, for ever
    (up to 64 MiB of them). Now a stream without a whole record for `idle_timeout_s` is dead."""
    with serve_in_thread(trickling()) as url:
        async with OpenCodeClient(url) as oc:
            seen: list[str] = []
            with anyio.fail_after(15), pytest.raises(Unavailable, match=r"no whole record for 0\.5 s"):
                async for event in oc.events(idle_timeout_s=0.5):
                    seen.append(event["type"])
            assert seen == ["server.connected"]


@pytest.fixture
def endless_headers() -> Iterator[str]:
    """A server that answers every request with a header that never ends, as fast as the client reads."""
    listener = socket.create_server(("127.0.0.1", 0))
    chunk = b"a" * 65536

    def serve(connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            try:
                connection.sendall(b"HTTP/1.1 200 OK\r\nX-Huge: ")
                while True:
                    connection.sendall(chunk)
            except OSError:
                return  # the client hung up

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


async def test_a_reply_whose_headers_never_end_is_cut_short(endless_headers: str) -> None:
    """OPENCODE_MAX_RESPONSE_BYTES bounds a body; nothing bounded the headers of the lean GET client (aiohttp stops
    at 8,190 bytes a line). Was: a GET read one endless header for its whole timeout, here 5 s: the process grew by
    about 110 MB, per request in flight, and then a timeout was all it said. Now the reply is refused past 256 KiB of
    headers, as a garbled reply."""
    async with OpenCodeClient(endless_headers, timeout_s=5) as oc:
        with pytest.raises(Unavailable) as caught:
            await oc.messages("ses_x")
    assert "headers past 262144 bytes" in caught.value.message


async def test_an_ordinary_error_status_is_still_an_opencode_error() -> None:
    """The refusal and redirect errors are for 401, 403 and 3xx only: a 400 stays what it was."""
    with serve_in_thread(answering(400)) as url:
        async with OpenCodeClient(url) as oc:
            with pytest.raises(OpenCodeError) as caught:
                await oc.messages("ses_x")
    assert caught.value.status_code == 400 and not caught.value.retryable
