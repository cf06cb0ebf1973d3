"""The gateway under the deploy/ definitions: a Redis user that may only read and subscribe, a PostgreSQL
role that may only SELECT. Everything it serves must still work."""

from __future__ import annotations

import httpx
import pytest
from psycopg.conninfo import make_conninfo

from shared import commands
from shared.cli.stream import SessionView, aiter_events
from shared.config import Secret
from tests.roles import GATEWAY, ROLE, ROLE_PASSWORD, acl_denials, apply_sql, user_url

pytestmark = pytest.mark.anyio


async def test_the_gateway_serves_everything_with_read_only_credentials(
    acl,
    pg_admin,
    make_worker,
    make_gateway,
    redis,
    db,
    opencode,
    redis_url,
    schema,
):
    apply_sql(pg_admin, ROLE_PASSWORD)
    await make_worker()
    gateway = await make_gateway(
        redis_url=Secret(user_url(redis_url, GATEWAY)),
        database_url=Secret(make_conninfo(schema, user=ROLE, password=ROLE_PASSWORD)),
    )
    state = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-RO", prompt="TOOL ro")
    sid = state["sessionId"]
    view = SessionView()
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        assert (await client.get("/readyz")).json()["ready"] is True
        async with client.stream("GET", f"/sessions/{sid}/stream") as response:
            async for event in aiter_events(response):
                view.apply(event)
                if event.name == "complete":
                    break
        archived = (await client.get(f"/sessions/{sid}")).json()
        history = (await client.get("/tickets/T-RO/sessions")).json()
        live = (await client.get("/sessions?live=true")).json()
    assert view.completed and view.state == archived and archived["status"] == "completed"
    assert [s["sessionId"] for s in history["sessions"]] == [sid]
    assert live["sessions"] == []
    assert await acl_denials(acl) == []  # not one command of the gateway's was refused
    cur = await db.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (ROLE,))
    assert (await cur.fetchone())[0] >= 1  # it really connected as the read-only role
