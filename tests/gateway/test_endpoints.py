"""The JSON reads, health, metrics and the OpenAPI document; auth on and off."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from gateway.app import create_app
from shared import commands
from shared.config import Secret
from shared.errors import ConfigError
from shared.tokens import Scope, mint_token
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio
SECRET = "test-secret-of-enough-length-for-hs256"


async def archive_three(make_worker, redis, db, opencode, ticket="T-H"):
    await make_worker()
    ids = []
    for prompt in ("ECHO one", "ECHO two", "ECHO three"):
        state = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id=ticket, prompt=prompt)
        ids.append(state["sessionId"])

        async def archived(sid=state["sessionId"]):
            cur = await db.execute("SELECT status FROM opencode_sessions WHERE id = %s", (sid,))
            row = await cur.fetchone()
            return row and row[0] == "completed"

        await wait_for(archived, timeout=30)
    return ids


async def test_ticket_history_is_newest_first_and_paginates(make_worker, make_gateway, redis, db, opencode):
    ids = await archive_three(make_worker, redis, db, opencode)
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway) as client:
        first = (await client.get("/tickets/T-H/sessions?limit=2")).json()
        assert [s["sessionId"] for s in first["sessions"]] == [ids[2], ids[1]]
        assert "messages" not in first["sessions"][0] and first["sessions"][0]["messageCount"] == 2
        second = (await client.get(f"/tickets/T-H/sessions?limit=2&before={first['nextCursor']}")).json()
        assert [s["sessionId"] for s in second["sessions"]] == [ids[0]]
        assert second["nextCursor"] is None
        full = (await client.get("/tickets/T-H/sessions?messages=true&limit=1")).json()
        assert len(full["sessions"][0]["messages"]) == 2
        assert (await client.get("/tickets/T-H/active")).status_code == 404
        by_type = (await client.get("/sessions?type=chat&limit=10")).json()
        assert {s["sessionId"] for s in by_type["sessions"]} == set(ids)
        assert (await client.get("/sessions?type=admin")).json()["sessions"] == []
        for bad in (
            "/tickets/T-H/sessions?limit=0",
            "/tickets/T-H/sessions?before=%%%",
            "/sessions?type=nope",
            "/tickets/bad:id/sessions",
            "/sessions?live=maybe",
        ):
            response = await client.get(bad)
            assert response.status_code == 400, bad
            assert response.json()["error"]


async def test_live_list_and_ticket_active(make_gateway, redis, db, opencode):
    gateway = await make_gateway()
    state = await commands.enqueue(redis, db, opencode, session_type="admin", ticket_id="T-L", prompt="ECHO hi")
    async with httpx.AsyncClient(base_url=gateway) as client:
        live = (await client.get("/sessions?live=true")).json()["sessions"]
        assert [s["sessionId"] for s in live] == [state["sessionId"]] and live[0]["status"] == "pending"
        assert (await client.get("/sessions?live=true&type=chat")).json()["sessions"] == []
        active = (await client.get("/tickets/T-L/active")).json()
        assert active["sessionId"] == state["sessionId"] and active["live"] is True and active["seq"] == 1


async def test_health_metrics_openapi(make_gateway):
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "postgres": "ok"}
        await client.get("/sessions/not-valid")
        metrics = (await client.get("/metrics")).text
        assert "gateway_sse_clients" in metrics and 'route="/sessions/{session_id}",status="400"' in metrics
        spec = (await client.get("/openapi.json")).json()
        for path in ("/sessions/{session_id}/stream", "/tickets/{ticket_id}/sessions", "/sessions/live/stream"):
            assert path in spec["paths"]


async def test_readyz_reports_a_down_postgres(make_gateway, embedded_postgres):
    gateway = await make_gateway()
    embedded_postgres.stop()
    async with httpx.AsyncClient(base_url=gateway, timeout=20) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["postgres"] != "ok"


async def test_tokens_scope_every_endpoint(make_gateway, redis, db, opencode):
    gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    state = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-A", prompt="ECHO a")
    other = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-B", prompt="ECHO b")
    sid = state["sessionId"]

    def bearer(scope: Scope) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(SECRET, scope, 60)}"}

    async with httpx.AsyncClient(base_url=gateway) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        unauthenticated = await client.get(f"/sessions/{sid}")
        assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]
        assert (await client.get(f"/sessions/{sid}", headers={"Authorization": "Bearer forged"})).status_code == 401
        expired = {"Authorization": f"Bearer {mint_token(SECRET, Scope('admin'), 60, now=0)}"}
        assert (await client.get("/sessions?live=true", headers=expired)).status_code == 401
        own = bearer(Scope("session", sid))
        assert (await client.get(f"/sessions/{sid}", headers=own)).status_code == 200
        assert (await client.get(f"/sessions/{other['sessionId']}", headers=own)).status_code == 403
        assert (await client.get(f"/sessions/{other['sessionId']}/stream", headers=own)).status_code == 403
        assert (await client.get("/sessions?live=true", headers=own)).status_code == 403
        ticket = bearer(Scope("ticket", "T-A"))
        assert (await client.get(f"/sessions/{sid}", headers=ticket)).status_code == 200
        assert (await client.get("/tickets/T-A/active", headers=ticket)).status_code == 200
        assert (await client.get("/tickets/T-B/active", headers=ticket)).status_code == 403
        assert (await client.get(f"/sessions/{other['sessionId']}", headers=ticket)).status_code == 403
        token = mint_token(SECRET, Scope("session", sid), 60)
        async with client.stream("GET", f"/sessions/{sid}/stream?token={token}") as response:
            assert response.status_code == 200
        admin = bearer(Scope("admin"))
        assert (await client.get("/sessions?live=true", headers=admin)).status_code == 200
        assert (await client.get("/metrics", headers=admin)).status_code == 200
        assert (await client.get("/metrics")).status_code == 401


async def test_a_jwt_minted_by_another_backend_is_accepted(make_gateway, redis, db, opencode):
    """Another backend mints with its own JWT library, knowing only the README's claims; forgeries are 401."""
    gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    state = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-J", prompt="ECHO j")
    sid, exp = state["sessionId"], int(time.time()) + 60

    async def get(token: str, path: str = f"/sessions/{sid}") -> httpx.Response:
        return await client.get(path, headers={"Authorization": f"Bearer {token}"})

    async with httpx.AsyncClient(base_url=gateway) as client:
        own = jwt.encode({"sub": f"session:{sid}", "exp": exp, "iat": exp - 60}, SECRET, algorithm="HS256")
        assert (await get(own)).status_code == 200
        assert (await get(own, "/tickets/T-J/active")).status_code == 403
        ticket = jwt.encode({"sub": "ticket:T-J", "exp": exp}, SECRET, algorithm="HS256")
        assert (await get(ticket, "/tickets/T-J/active")).status_code == 200
        async with client.stream("GET", f"/sessions/{sid}/stream?token={ticket}") as response:
            assert response.status_code == 200
        forged = [
            jwt.encode({"sub": "admin", "exp": exp}, None, algorithm="none"),
            jwt.encode({"sub": "admin", "exp": exp}, SECRET * 2, algorithm="HS512"),  # 64+ bytes for HS512
            jwt.encode({"sub": "admin"}, SECRET, algorithm="HS256"),
            jwt.encode({"sub": "admin", "exp": exp}, SECRET + "-but-another-one", algorithm="HS256"),
            jwt.encode({"sub": "admin", "exp": exp - 120}, SECRET, algorithm="HS256"),
        ]
        for token in forged:
            response = await get(token, "/sessions?live=true")
            assert response.status_code == 401, token
            assert response.json()["error"]


def test_the_gateway_refuses_to_start_without_a_secret_unless_auth_is_off(settings):
    import dataclasses

    with pytest.raises(ConfigError, match="GATEWAY_AUTH_SECRET"):
        create_app(dataclasses.replace(settings, gateway_auth=True, gateway_auth_secret=None))
    assert create_app(dataclasses.replace(settings, gateway_auth=False, gateway_auth_secret=None)) is not None


async def test_cors_allows_only_the_configured_origins(make_gateway):
    gateway = await make_gateway(gateway_cors_origins=("https://app.example",))
    async with httpx.AsyncClient(base_url=gateway) as client:
        allowed = await client.get("/healthz", headers={"Origin": "https://app.example"})
        assert allowed.headers.get("access-control-allow-origin") == "https://app.example"
        other = await client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = await client.options(
            "/sessions/x/stream",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization,last-event-id",
            },
        )
        assert preflight.status_code == 200
        assert "last-event-id" in preflight.headers["access-control-allow-headers"].lower()


async def test_a_session_token_cannot_tell_whether_another_session_exists(make_gateway, redis, db, opencode):
    """Was: its stream answered 403 for a session that exists and 404 for one that does not."""
    gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    own = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-A", prompt="ECHO a")
    other = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-B", prompt="ECHO b")
    headers = {"Authorization": f"Bearer {mint_token(SECRET, Scope('session', own['sessionId']), 60)}"}
    answers = {}
    async with httpx.AsyncClient(base_url=gateway) as client:
        for sid in (other["sessionId"], "ses_" + "Z" * 26):
            for path in (f"/sessions/{sid}", f"/sessions/{sid}/stream"):
                response = await client.get(path, headers=headers)
                answers[path] = (response.status_code, response.json()["error"])
    assert {status for status, _ in answers.values()} == {403}, answers
    assert all("does not cover session" in error for _, error in answers.values())


async def test_a_refused_cors_preflight_is_a_json_error_with_the_same_headers(make_gateway):
    """Was Starlette's `400 text/plain` "Disallowed CORS origin"; every other error is JSON."""
    gateway = await make_gateway(gateway_cors_origins=("https://app.example",))
    async with httpx.AsyncClient(base_url=gateway) as client:
        other_origin = await client.options(
            "/sessions", headers={"Origin": "http://x", "Access-Control-Request-Method": "GET"}
        )
        other_header = await client.options(
            "/sessions",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "x-evil",
            },
        )
    for response, refused in ((other_origin, ["origin"]), (other_header, ["headers"])):
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {
            "error": f"CORS preflight refused: {refused[0]} not allowed",
            "detail": {"refused": refused},
        }
        assert response.headers["access-control-allow-methods"] == "GET"
        assert response.headers["access-control-max-age"] == "600"
        assert "last-event-id" in response.headers["access-control-allow-headers"].lower()
        assert response.headers["vary"].startswith("Origin")
    assert "access-control-allow-origin" not in other_origin.headers
    assert other_header.headers["access-control-allow-origin"] == "https://app.example"
