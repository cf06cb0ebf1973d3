"""A token's scope, seen as an attacker would probe it: nothing it answers tells another ticket's or session's data
or existence, and nothing an unauthenticated caller may read names the private network."""

from __future__ import annotations

import httpx
import pytest

from shared import commands
from shared.config import Secret
from shared.dev.processes import free_port
from shared.store import keys
from shared.tokens import Scope, mint_token

pytestmark = pytest.mark.anyio
SECRET = "review-scope-secret-of-enough-length-0123"
MISSING = "ses_" + "Z" * 26


def bearer(scope: Scope) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, scope, 60)}"}


async def test_a_ticket_token_cannot_tell_whether_a_session_of_another_ticket_exists(make_gateway, redis, db, opencode):
    """Was: a ticket token got 403 for another ticket's session and 404 for an id that exists nowhere, on the JSON
    read and on the stream, so it could tell which ids exist elsewhere."""
    gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-SA", prompt="ECHO a")
    other = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-SB", prompt="ECHO b")
    ticket = bearer(Scope("ticket", "T-SA"))
    answers = {}
    async with httpx.AsyncClient(base_url=gateway, timeout=20) as client:
        for sid in (other["sessionId"], MISSING):
            for path in (f"/sessions/{sid}", f"/sessions/{sid}/stream"):
                response = await client.get(path, headers=ticket)
                answers[path] = (response.status_code, response.json()["error"].replace(sid, "ID"))
        # who may know: admin, and the session's own token, still get the 404 that helps them
        for headers in (bearer(Scope("admin")), bearer(Scope("session", MISSING))):
            assert (await client.get(f"/sessions/{MISSING}", headers=headers)).status_code == 404
    assert set(answers.values()) == {(403, "the token does not cover session ID")}, answers


async def test_a_tickets_active_session_is_never_another_tickets(make_gateway, redis, db, opencode):
    """Was: `/tickets/{id}/active` served whatever session the ticket's Redis pointer named, another ticket's too
    (a stale or damaged pointer), to that ticket's token."""
    gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    other = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-PB", prompt="ECHO b")
    await redis.set(keys.ticket_active("T-PA"), other["sessionId"])
    async with httpx.AsyncClient(base_url=gateway) as client:
        response = await client.get("/tickets/T-PA/active", headers=bearer(Scope("ticket", "T-PA")))
        own = await client.get("/tickets/T-PB/active", headers=bearer(Scope("ticket", "T-PB")))
    assert response.status_code == 404, response.text
    assert other["sessionId"] not in response.text
    assert own.status_code == 200 and own.json()["sessionId"] == other["sessionId"]


async def test_readyz_says_which_store_failed_without_naming_its_address(make_gateway):
    """Was: `/readyz`, which needs no token, answered the driver's message: the store's address and port (and,
    for a refused login, the role's name) for anyone to read."""
    port = free_port()
    gateway = await make_gateway(
        gateway_auth=True, gateway_auth_secret=Secret(SECRET), redis_url=Secret(f"redis://127.0.0.1:{port}/0")
    )
    async with httpx.AsyncClient(base_url=gateway, timeout=20) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"redis": "Redis is unreachable", "postgres": "ok"}
    assert str(port) not in ready.text and "127.0.0.1" not in ready.text
