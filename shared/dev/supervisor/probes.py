"""Is it up yet: the readiness probes of `dev` (ports, HTTP), each answering within a second."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx

from shared.dev.processes import LOOPBACK

READY_PROBE_TIMEOUT_S = 1.0


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(READY_PROBE_TIMEOUT_S)
        return sock.connect_ex((host, port)) == 0


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """Nobody listens there and we could bind it (SO_REUSEADDR, as uvicorn binds)."""
    if port_open(port, host):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=READY_PROBE_TIMEOUT_S, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        return port_open(port, parts.hostname or LOOPBACK)
    except OSError:
        return False
