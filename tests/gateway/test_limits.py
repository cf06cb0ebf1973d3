"""Connection limits of the gateway process: request headers on a deadline, idle keep-alive, a concurrency cap."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from shared.config import Settings
from shared.dev.processes import free_port
from shared.errors import ConfigError
from tests.helpers import Child, wait_port

DEADLINE_S = 15.0  # far above the configured timeouts: a deadline to wait on, not a timing to assert


@pytest.fixture
def gateway(redis_url: str, schema: str) -> Iterator[tuple[int, Child]]:
    port = free_port()
    env = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": schema,
        "GATEWAY_PORT": str(port),
        "GATEWAY_AUTH": "off",
        "GATEWAY_HEADER_TIMEOUT_MS": "500",
        "GATEWAY_KEEPALIVE_TIMEOUT_S": "1",
        "GATEWAY_MAX_CONNECTIONS": "3",
    }
    child = Child("gateway-limits", "gateway", [], env)
    try:
        wait_port(port, child=child)
        yield port, child
    finally:
        child.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    return sock


def closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server sent until it closed the connection; fails if it is still open at the deadline."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open {DEADLINE_S} s") from None
    return received


def test_a_client_that_sends_nothing_is_disconnected(gateway):
    port, _ = gateway
    with connect(port) as sock:
        assert closed_by_server(sock) == b""


def test_a_client_that_sends_half_a_request_is_disconnected(gateway):
    port, _ = gateway
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        assert closed_by_server(sock) == b""


def test_an_idle_keep_alive_connection_is_closed_after_its_response(gateway):
    port, _ = gateway
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        received = closed_by_server(sock)
    assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(b'{"status":"ok"}')


def json_error(received: bytes) -> tuple[bytes, dict[str, object]]:
    """The status line and the JSON body of a whole HTTP/1.1 answer (content-length framed)."""
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"\r\ncontent-type: application/json\r\n" in head.lower() + b"\r\n", head
    error = json.loads(body)
    assert set(error) == {"error", "detail"} and error["error"], error
    return head.split(b"\r\n", 1)[0], error


def test_past_the_concurrency_cap_a_request_is_refused_with_a_json_503(gateway):
    """The 503 was uvicorn's `text/plain` "Service Unavailable"; the gateway serves on."""
    port, child = gateway
    idle = [connect(port) for _ in range(3)]
    try:
        with connect(port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
            status, error = json_error(closed_by_server(sock))
    finally:
        for sock in idle:
            sock.close()
    assert status.startswith(b"HTTP/1.1 503 ") and "GATEWAY_MAX_CONNECTIONS" in str(error["error"])
    assert child.alive()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: " + b"a" * 20_000,  # 16 KiB passed, and no end yet
        b"NOT AN HTTP REQUEST\r\n\r\n",
    ],
)
def test_a_request_too_big_or_unreadable_is_a_json_400(gateway, request_bytes):
    """Was uvicorn's `text/plain` "Invalid HTTP request received."."""
    port, child = gateway
    with connect(port) as sock:
        sock.sendall(request_bytes)
        status, error = json_error(closed_by_server(sock))
    assert status.startswith(b"HTTP/1.1 400 ") and "GATEWAY_MAX_HEADER_BYTES" in str(error["error"])
    assert child.alive()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_HEADER_TIMEOUT_MS", "0"),
        ("GATEWAY_KEEPALIVE_TIMEOUT_S", "1.5"),
        ("GATEWAY_MAX_CONNECTIONS", "none"),
        ("GATEWAY_MAX_HEADER_BYTES", "10"),
    ],
)
def test_a_bad_limit_is_refused_at_start_up_naming_it(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_the_limits_have_defaults():
    settings = Settings.from_env({})
    assert settings.gateway_header_timeout_s == 10.0 and settings.gateway_keepalive_timeout_s == 5
    assert settings.gateway_max_connections == 20_000 and settings.gateway_max_header_bytes == 16_384
