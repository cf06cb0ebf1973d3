"""Limits that keep one client from holding the gateway's memory: a stream's byte budget, the write timeout, and
lists with messages streamed in pages of bounded size. The gateway runs as its own process (its real protocol)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator

import httpx
import pytest
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.routing import Route

from gateway.fanout import DROPPED, Published, Subscription
from gateway.handlers import EXCEPTION_HANDLERS
from shared import commands
from shared.cli.stream import aiter_events
from shared.dev.processes import free_port
from shared.models import dumps
from shared.store import keys
from shared.store.archive import to_timestamp
from tests.helpers import Child, wait_for, wait_port

pytestmark = pytest.mark.anyio
DEADLINE_S = 30.0  # far above the configured limits: a deadline to wait on, not a timing to assert
EVENT_BYTES = 100_000


@pytest.fixture
def gateway_process(redis_url: str, schema: str) -> Iterator[Callable[..., str]]:
    children: list[Child] = []

    def start(**env: str) -> str:
        port = free_port()
        base = {"REDIS_URL": redis_url, "DATABASE_URL": schema, "GATEWAY_PORT": str(port), "GATEWAY_AUTH": "off"}
        child = Child("gateway-stream-limits", "gateway", [], {**base, **env})
        children.append(child)
        wait_port(port, child=child)
        return f"http://127.0.0.1:{port}"

    yield start
    for child in children:
        child.close()


async def metric(gateway: str, name: str) -> float | None:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{gateway}/metrics")).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else None


def never_reading_client(gateway: str, path: str) -> socket.socket:
    """A client with a tiny receive window that sends its request, then reads nothing."""
    url = httpx.URL(gateway)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(DEADLINE_S)
    sock.connect((url.host, url.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """What the server sent until it closed (or reset) the connection; TimeoutError if it kept it open."""
    received = b""
    try:
        while chunk := sock.recv(1 << 20):
            received += chunk
    except ConnectionResetError:
        pass
    return received


async def publish_big_updates(redis, sid: str, count: int) -> None:
    """`count` updates of EVENT_BYTES each, in seq order after the pending session's seq 1."""
    text = "x" * EVENT_BYTES
    for seq in range(2, 2 + count):
        part = {"id": f"prt_{seq:026d}", "messageID": "msg_00000000000000000000000001", "type": "text", "text": text}
        change = {"seq": seq, "type": "update", "sessionId": sid, "state": {}, "messages": [], "parts": [part]}
        await redis.publish(keys.updates(sid), dumps(change))


async def test_a_backlog_past_the_byte_budget_is_dropped_but_one_large_event_is_not():
    sub = Subscription("c", max_queued=1000, max_bytes=1000)
    sub.push(Published(b"x" * 5000, {"seq": 1}))  # larger than the budget, but nothing was queued: it goes out
    first = await sub.get(0.01)
    assert isinstance(first, Published) and first.seq == 1
    for seq in range(2, 200):
        sub.push(Published(b"z" * 100, {"seq": seq}))
    assert sub.queued_bytes == 0  # freed at once, not when the client reads again
    assert await sub.get(0.01) is DROPPED
    sub.push(Published(b"z" * 100, {"seq": 200}))
    assert await sub.get(0.01) is DROPPED and sub.queued_bytes == 0  # the stream ends: nothing more is held


async def test_a_client_too_far_behind_is_dropped_and_resumes_with_last_event_id(gateway_process, redis, db, opencode):
    gateway = gateway_process(GATEWAY_STREAM_BUFFER_BYTES="65536", GATEWAY_WRITE_TIMEOUT_MS="600000")
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="ECHO hi")
    sid = state["sessionId"]
    with never_reading_client(gateway, f"/sessions/{sid}/stream") as sock:
        await wait_for(lambda: metric(gateway, 'gateway_sse_clients{stream="session"}'), timeout=DEADLINE_S)
        await publish_big_updates(redis, sid, 60)  # 6 MB while the client reads nothing
        received = b""
        while not received.endswith(b"\r\n0\r\n\r\n"):  # now it reads: what was sent, then the end of the stream
            chunk = sock.recv(1 << 20)
            assert chunk, "the connection closed before the stream ended cleanly"
            received += chunk
    ids = [int(i) for i in re.findall(rb"^id: (\d+)$", received, re.MULTILINE)]
    assert ids[0] == 1 and ids == list(range(1, len(ids) + 1)), "in order, nothing skipped before the drop"
    assert len(ids) < 61, "the backlog past the budget was dropped, not delivered"
    assert await metric(gateway, 'gateway_streams_ended_total{reason="slow_client"}') == 1.0
    async with httpx.AsyncClient(base_url=gateway, timeout=DEADLINE_S) as client:
        headers = {"Last-Event-ID": str(ids[-1])}
        async with client.stream("GET", f"/sessions/{sid}/stream", headers=headers) as response:
            first = await anext(aiter(aiter_events(response)))
    assert first.name == "snapshot" and first.data["seq"] == 1  # resumed: the state as it is now


async def test_a_client_that_never_reads_is_disconnected_after_the_write_timeout(gateway_process, redis, db, opencode):
    gateway = gateway_process(GATEWAY_WRITE_TIMEOUT_MS="500")
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="ECHO hi")
    sid = state["sessionId"]
    with never_reading_client(gateway, f"/sessions/{sid}/stream") as sock:
        await wait_for(lambda: metric(gateway, 'gateway_sse_clients{stream="session"}'), timeout=DEADLINE_S)
        await publish_big_updates(redis, sid, 200)  # 20 MB: far more than the socket buffers take

        async def stream_closed() -> bool:
            return await metric(gateway, 'gateway_sse_clients{stream="session"}') == 0.0

        await wait_for(stream_closed, timeout=DEADLINE_S, what="the gateway to cut the client off")
        received = read_until_closed(sock)
    assert not received.endswith(b"\r\n0\r\n\r\n"), "cut off, not a stream that ended"


async def archive_big_sessions(db, ticket: str, text: str, count: int = 12) -> list[str]:
    """`count` archived sessions of the ticket, each one message of `text`, newest last; their ids."""
    ids = []
    for i in range(count):
        sid = f"ses_{i:026d}"
        ids.append(sid)
        messages = [{"info": {"id": f"msg_{i:026d}", "role": "assistant"}, "parts": [{"id": "prt_1", "text": text}]}]
        await db.execute(
            "INSERT INTO opencode_sessions (id, ticket_id, session_type, status, messages, metadata, started_at,"
            " completed_at) VALUES (%s, %s, 'chat', 'completed', %s::jsonb, '{}'::jsonb, %s, %s)",
            (
                sid,
                ticket,
                json.dumps(messages),
                to_timestamp(1_700_000_000_000 + i),
                to_timestamp(1_700_000_001_000 + i),
            ),
        )
    return ids


async def test_a_huge_list_with_messages_is_streamed_in_pages_of_bounded_size(make_gateway, db):
    text = "m" * EVENT_BYTES
    ids = await archive_big_sessions(db, "T-BIG", text)
    cap = 262_144
    gateway = await make_gateway(gateway_max_response_bytes=cap)
    seen: list[str] = []
    cursor = None
    async with httpx.AsyncClient(base_url=gateway, timeout=DEADLINE_S) as client:
        plain = (await client.get("/tickets/T-BIG/sessions?limit=100")).json()
        assert len(plain["sessions"]) == 12 and plain["nextCursor"] is None  # without messages: one page
        while True:
            query = {"limit": "100", "messages": "true", **({"before": cursor} if cursor else {})}
            response = await client.get("/tickets/T-BIG/sessions", params=query)
            assert response.status_code == 200 and "content-length" not in response.headers  # streamed
            assert response.headers["content-type"] == "application/json"
            assert len(response.content) <= cap + EVENT_BYTES + 1000
            page = response.json()
            assert 1 <= len(page["sessions"]) < 12
            for session in page["sessions"]:
                assert session["messages"][0]["parts"][0]["text"] == text and session["messageCount"] == 1
            seen += [s["sessionId"] for s in page["sessions"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        admin = (await client.get("/sessions", params={"type": "chat", "messages": "true", "limit": "100"})).json()
    assert seen == list(reversed(ids)), "every session once, newest first, across the pages"
    assert [s["sessionId"] for s in admin["sessions"]] == seen[: len(admin["sessions"])] and admin["nextCursor"]


async def test_postgresql_gone_mid_page_ends_the_page_early_and_its_cursor_continues_it(
    gateway_process, db, embedded_postgres
):
    """Was: the failed read broke the started response (a truncated body, an ASGI traceback in the log)."""
    text = "m" * 1_000_000
    ids = await archive_big_sessions(db, "T-GONE", text)
    gateway = gateway_process(GATEWAY_MAX_RESPONSE_BYTES=str(1 << 30))
    # A 4 KiB receive window: the gateway, a few sessions ahead at most, waits for the client while PostgreSQL stops
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    path = "/tickets/T-GONE/sessions?limit=100&messages=true"
    async with httpx.AsyncClient(base_url=gateway, timeout=DEADLINE_S, transport=transport) as client:
        async with client.stream("GET", path) as response:
            assert response.status_code == 200
            chunks = response.aiter_bytes()
            body = await anext(chunks)
            embedded_postgres.stop()
            # then the rest at full speed: through the 4 KiB window, with its delayed ACKs, 1 MB took ~24 s
            sock = response.extensions["network_stream"].get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP, 1 << 22)
            body += b"".join([chunk async for chunk in chunks])
        page = json.loads(body)
        assert 1 <= len(page["sessions"]) < 12 and page["nextCursor"] is not None
        seen = [s["sessionId"] for s in page["sessions"]]
        assert all(s["messages"][0]["parts"][0]["text"] == text for s in page["sessions"])
        embedded_postgres.start()
        cursor = page["nextCursor"]
        while cursor is not None:

            async def next_page(cursor: str = cursor) -> httpx.Response | None:
                response = await client.get(path, params={"before": cursor})
                return response if response.status_code == 200 else None  # 503 until the pool reconnects

            page = (await wait_for(next_page, timeout=DEADLINE_S, interval=0.2)).json()
            seen += [s["sessionId"] for s in page["sessions"]]
            cursor = page["nextCursor"]
    assert seen == list(reversed(ids)), "every session once, newest first, across the pages"


async def test_an_exhausted_postgresql_pool_is_a_503_not_a_crash():
    """Hundreds of streams opening at once wait for the pool's few connections; past its timeout: retry later."""

    async def busy(request):
        raise PoolTimeout("couldn't get a connection after 30.00 sec")

    app = Starlette(routes=[Route("/busy", busy)], exception_handlers=EXCEPTION_HANDLERS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gateway") as client:
        response = await client.get("/busy")
    assert response.status_code == 503
    assert response.json() == {"error": "PostgreSQL is busy: no connection free in time", "detail": None}
