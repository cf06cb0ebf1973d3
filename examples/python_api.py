"""The Python API end to end: enqueue a session, wait for it to end, read it back, send a follow-up.

Run it where `opencode-sessions dev` is running (second terminal, after its export lines):

    python examples/python_api.py

It reads REDIS_URL, DATABASE_URL and OPENCODE_URL like every process (shared.Settings). The PostgreSQL
connection is opened in psycopg's default mode (autocommit off) on purpose: the API commits its own writes in
either mode, so callers need not configure anything (a connection with a transaction already in progress is
refused with InvalidInput rather than committed behind the caller's back).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from redis.asyncio import Redis

from shared import Settings, enqueue, get_session, send
from shared.logs import configure_logging
from shared.opencode.client import OpenCodeClient

FINAL = ("completed", "error", "cancelled")
TIMEOUT_S = 60.0


async def wait_until_ended(redis: Redis, db: psycopg.AsyncConnection[object], session_id: str) -> dict[str, Any]:
    """Poll until the session ends (a web frontend would follow GET /sessions/{id}/stream instead)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        session = await get_session(redis, db, session_id)
        if session["status"] in FINAL:
            return session
        if time.monotonic() > deadline:
            raise TimeoutError(f"{session_id} still {session['status']} after {TIMEOUT_S:g}s")
        await asyncio.sleep(0.5)


async def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings)  # the layer's logs on stderr, at LOG_LEVEL (default info), as JSON lines
    redis = Redis.from_url(str(settings.redis_url))
    db = await psycopg.AsyncConnection.connect(str(settings.database_url))  # autocommit off: psycopg's default
    opencode = OpenCodeClient(settings.opencode_url)
    try:
        state = await enqueue(redis, db, opencode, session_type="chat", ticket_id="T-42", prompt="TOOL list the files")
        session = await get_session(redis, db, state["sessionId"])  # live state, or the archived row
        print(f"enqueued {state['sessionId']} ({state['status']}), now {session['status']}")
        session = await wait_until_ended(redis, db, state["sessionId"])
        print(f"{session['sessionId']} {session['status']} with {len(session['messages'])} messages")
        await send(redis, db, state["sessionId"], "ECHO thanks")
        session = await wait_until_ended(redis, db, state["sessionId"])
        print(f"after the follow-up: {session['status']} with {len(session['messages'])} messages")
    finally:
        await opencode.aclose()
        await db.close()
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
