"""Safe defaults of the gateway: streams end with their token, a token holds a bounded number of streams, the Host
allow-list (DNS rebinding), placeholder and short secrets refused, and secret rotation."""

from __future__ import annotations

import dataclasses
import time
from contextlib import AsyncExitStack

import httpx
import pytest

from gateway.app import create_app
from shared import commands
from shared.cli.stream import aiter_events
from shared.config import Secret, Settings
from shared.errors import ConfigError
from shared.tokens import Scope, mint_token, verify_grant

pytestmark = pytest.mark.anyio
SECRET = "security-test-secret-of-enough-length-0123"
OLD_SECRET = "security-test-old-secret-of-enough-length-0"
READ_TIMEOUT_S = 20.0  # a deadline for the server to end a stream, far above the token TTLs used here


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def read_stream(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> list[tuple[str, object]]:
    """Every event until the server ends the stream."""
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        return [(event.name, event.data) async for event in aiter_events(response)]


# --- streams end with their token -----------------------------------------------------------------------------------


async def test_a_session_stream_ends_at_its_tokens_expiry_and_resumes_with_a_fresh_one(
    make_gateway, redis, db, opencode
):
    gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    state = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-EXP", prompt="ECHO hi")
    sid = state["sessionId"]
    token = mint_token(SECRET, Scope("session", sid), ttl_s=2)
    exp = verify_grant(SECRET, token).expires_at
    async with httpx.AsyncClient(base_url=gateway, timeout=READ_TIMEOUT_S) as client:
        events = await read_stream(client, f"/sessions/{sid}/stream", bearer(token))
        assert time.time() >= exp
        assert [name for name, _ in events] == ["snapshot", "token-expired"]
        assert events[-1][1] == {"error": "token expired", "exp": exp}
        # The old token is refused from now on; a fresh one resumes where the client was (no second snapshot).
        refused = await client.get(f"/sessions/{sid}/stream", headers=bearer(token))
        assert refused.status_code == 401 and refused.json()["error"] == "token expired"
        fresh = mint_token(SECRET, Scope("ticket", "T-EXP"), ttl_s=2)
        seq = str(events[0][1]["seq"])  # type: ignore[index]
        resumed = await read_stream(client, f"/sessions/{sid}/stream", {**bearer(fresh), "Last-Event-ID": seq})
    assert [name for name, _ in resumed] == ["token-expired"]


async def test_the_live_list_stream_ends_at_its_tokens_expiry(make_gateway):
    gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    token = mint_token(SECRET, Scope("admin"), ttl_s=2)
    exp = verify_grant(SECRET, token).expires_at
    async with httpx.AsyncClient(base_url=gateway, timeout=READ_TIMEOUT_S) as client:
        events = await read_stream(client, "/sessions/live/stream", bearer(token))
        metrics = (await client.get("/metrics", headers=bearer(mint_token(SECRET, Scope("admin"), 60)))).text
    assert [name for name, _ in events] == ["snapshot", "token-expired"]
    assert events[-1][1] == {"error": "token expired", "exp": exp}
    assert 'gateway_streams_ended_total{reason="token_expired"} 1.0' in metrics


# --- streams per token ------------------------------------------------------------------------------------------


async def test_one_token_holds_at_most_its_streams_however_many_it_asks_for(make_gateway):
    gateway = await make_gateway(
        gateway_auth=True, gateway_auth_secret=Secret(SECRET), gateway_max_streams_per_token=20
    )
    token = mint_token(SECRET, Scope("admin"), ttl_s=600)
    other = mint_token(SECRET, Scope("admin"), ttl_s=601)  # another token (a different exp, so another signature)
    limits = httpx.Limits(max_connections=100)
    async with AsyncExitStack() as streams, httpx.AsyncClient(base_url=gateway, timeout=20, limits=limits) as client:
        held = []
        for _ in range(20):
            response = await streams.enter_async_context(
                client.stream("GET", "/sessions/live/stream", headers=bearer(token))
            )
            assert response.status_code == 200
            held.append(response)
        refused = [(await client.get("/sessions/live/stream", headers=bearer(token))).status_code for _ in range(2000)]
        assert refused == [429] * 2000
        body = (await client.get("/sessions/live/stream", headers=bearer(token))).json()
        assert "GATEWAY_MAX_STREAMS_PER_TOKEN" in body["error"] and body["detail"] == {"limit": 20}
        async with client.stream("GET", "/sessions/live/stream", headers=bearer(other)) as response:
            assert response.status_code == 200  # the limit is per token
        await held[0].aclose()
        async with client.stream("GET", "/sessions/live/stream", headers=bearer(token)) as response:
            assert response.status_code == 200  # a closed stream gives its slot back


# --- Host allow-list ----------------------------------------------------------------------------------------------


async def test_with_auth_off_only_loopback_host_names_are_answered(make_gateway):
    gateway = await make_gateway()  # auth off
    port = httpx.URL(gateway).port
    async with httpx.AsyncClient(base_url=gateway) as client:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "10.0.0.1"):
            response = await client.get("/sessions?live=true", headers={"Host": host})
            assert response.status_code == 421, host
            assert "GATEWAY_ALLOWED_HOSTS" in response.json()["error"]
        for host in (f"localhost:{port}", "127.0.0.1", f"[::1]:{port}", "LOCALHOST"):
            assert (await client.get("/sessions?live=true", headers={"Host": host})).status_code == 200, host
        stream = await client.get("/sessions/live/stream", headers={"Host": "evil.example"})
        assert stream.status_code == 421
        assert (await client.get("/healthz", headers={"Host": "evil.example"})).status_code == 200


async def test_with_auth_on_any_host_unless_the_allow_list_says_otherwise(make_gateway):
    token = mint_token(SECRET, Scope("admin"), ttl_s=60)
    open_gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    listed = await make_gateway(
        gateway_auth=True,
        gateway_auth_secret=Secret(SECRET),
        gateway_allowed_hosts=("gateway.example", "*.sessions.example"),
    )
    async with httpx.AsyncClient() as client:
        anywhere = await client.get(
            f"{open_gateway}/sessions?live=true", headers={"Host": "evil.example", **bearer(token)}
        )
        assert anywhere.status_code == 200
        for host, status in (
            ("gateway.example", 200),
            ("eu.sessions.example:443", 200),
            ("sessions.example", 421),
            ("evil.example", 421),
        ):
            response = await client.get(f"{listed}/sessions?live=true", headers={"Host": host, **bearer(token)})
            assert response.status_code == status, host


# --- secrets ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("gateway_auth_secret", "s3cret", "GATEWAY_AUTH_SECRET is 6 bytes: it must be at least 32"),
        (
            "gateway_auth_secret",
            "CHANGE-ME-gateway-auth-secret-of-enough-length",
            "GATEWAY_AUTH_SECRET is a placeholder",
        ),
        ("gateway_auth_secret_previous", "x" * 31, "GATEWAY_AUTH_SECRET_PREVIOUS is 31 bytes: it must be at least 32"),
    ],
)
def test_placeholder_and_short_secrets_are_refused_at_start_up(field, value, message):
    secrets = {"gateway_auth_secret": Secret(SECRET), field: Secret(value)}
    settings = dataclasses.replace(Settings(), **secrets)
    with pytest.raises(ConfigError, match=message):
        create_app(settings)


async def test_a_rotated_out_secret_holds_while_it_is_listed_as_previous(make_gateway):
    rotating = await make_gateway(
        gateway_auth=True, gateway_auth_secret=Secret(SECRET), gateway_auth_secret_previous=Secret(OLD_SECRET)
    )
    rotated = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    old = mint_token(OLD_SECRET, Scope("admin"), ttl_s=60)
    new = mint_token(SECRET, Scope("admin"), ttl_s=60)
    forged = mint_token("another-secret-of-enough-length-0123456789", Scope("admin"), ttl_s=60)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{rotating}/sessions?live=true", headers=bearer(old))).status_code == 200
        assert (await client.get(f"{rotating}/sessions?live=true", headers=bearer(new))).status_code == 200
        assert (await client.get(f"{rotating}/sessions?live=true", headers=bearer(forged))).status_code == 401
        assert (await client.get(f"{rotated}/sessions?live=true", headers=bearer(old))).status_code == 401


# --- the settings ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_MAX_STREAMS_PER_TOKEN", "0"),
        ("GATEWAY_STREAM_BUFFER_BYTES", "1024"),
        ("GATEWAY_WRITE_TIMEOUT_MS", "soon"),
        ("GATEWAY_MAX_RESPONSE_BYTES", "-1"),
        ("GATEWAY_ALLOWED_HOSTS", "evil.example:8080"),
        ("GATEWAY_ALLOWED_HOSTS", "bad host"),
    ],
)
def test_a_bad_limit_is_refused_naming_it(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_the_limits_have_defaults():
    settings = Settings.from_env({})
    assert settings.gateway_max_streams_per_token == 100
    assert settings.gateway_stream_buffer_bytes == 8 * 1024 * 1024
    assert settings.gateway_write_timeout_s == 30.0
    assert settings.gateway_max_response_bytes == 4 * 1024 * 1024
    assert settings.gateway_allowed_hosts is None  # loopback names with auth off, any host with auth on
    assert Settings.from_env({"GATEWAY_ALLOWED_HOSTS": "a.example, *.b.example"}).gateway_allowed_hosts == (
        "a.example",
        "*.b.example",
    )
