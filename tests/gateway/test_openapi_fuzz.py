"""Schemathesis against the gateway's own /openapi.json: no 5xx, and every answer as the document says.

The gateway runs for real (its own process, Redis, PostgreSQL, auth on) with a few archived sessions;
schemathesis (tests/gateway/schema_fuzz.py) drives it with valid and invalid parameters, as an attacker would.
"""

from __future__ import annotations

import anyio
import pytest

from shared import commands
from shared.dev.processes import free_port
from shared.tokens import Scope, mint_token
from tests.helpers import Child, wait_for, wait_port

pytestmark = pytest.mark.anyio
SECRET = "fuzz-secret-of-enough-length-for-hs256"
FUZZ_DEADLINE_S = 240


async def test_the_gateway_answers_every_generated_request_as_documented(
    make_worker, redis, db, opencode, redis_url, schema
):
    await make_worker()
    for n, ticket in enumerate(("T-1", "T-1", "T-2")):
        sid = (await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id=ticket, prompt=f"ECHO {n}"))[
            "sessionId"
        ]

        async def archived(sid=sid):
            cur = await db.execute("SELECT status FROM opencode_sessions WHERE id = %s", (sid,))
            row = await cur.fetchone()
            return row and row[0] == "completed"

        await wait_for(archived, timeout=30)
    port = free_port()
    env = {"REDIS_URL": redis_url, "DATABASE_URL": schema, "GATEWAY_PORT": str(port), "GATEWAY_AUTH_SECRET": SECRET}
    gateway = Child("gateway-fuzz", "gateway", [], env)
    fuzzer = None
    try:
        wait_port(port, child=gateway)
        token = mint_token(SECRET, Scope("admin"), 600)
        fuzzer = Child("schema-fuzz", "tests.gateway.schema_fuzz", [f"http://127.0.0.1:{port}", token], {})
        code = await anyio.to_thread.run_sync(fuzzer.proc.wait, FUZZ_DEADLINE_S)
        assert code == 0, fuzzer.output()[-6000:]
        assert gateway.alive()
        assert "Traceback" not in gateway.output()
    finally:
        if fuzzer is not None:
            fuzzer.close()
        gateway.close()
