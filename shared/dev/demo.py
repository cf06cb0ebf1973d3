"""Sample sessions for `opencode-sessions dev --demo`: something to watch the moment the stack is up.

The prompts use the OpenCode simulator's keywords (shared.dev.simulator.scenarios): ECHO streams a text answer,
TOOL runs a `bash` tool call then answers, REJECT fails at once with a model error. A real OpenCode answers
them as ordinary prompts.
"""

from __future__ import annotations

from typing import Any

from shared import commands
from shared.opencode.client import OpenCodeClient
from shared.store.connections import pg_connect, redis_client

DEMO_TICKET = "demo"
DEMO_SESSIONS: tuple[tuple[str, str], ...] = (
    ("demo: text answer", "ECHO hello from the demo"),
    ("demo: tool call", "TOOL run a shell command, then sum it up"),
    ("demo: failing session", "REJECT this prompt (the model refuses it: the session ends in error)"),
)
DEMO_OPENCODE_TIMEOUT_S = 15.0


async def enqueue_demo(redis_url: str, database_url: str, opencode_url: str) -> list[dict[str, Any]]:
    """Queue the sample sessions under ticket `demo`; returns [{sessionId, title, prompt}] in order."""
    redis = redis_client(redis_url, max_connections=2)
    try:
        conn = await pg_connect(database_url)
        try:
            async with OpenCodeClient(opencode_url, timeout_s=DEMO_OPENCODE_TIMEOUT_S) as opencode:
                queued = []
                for title, prompt in DEMO_SESSIONS:
                    state = await commands.enqueue(
                        redis, conn, opencode, session_type="ask", ticket_id=DEMO_TICKET, prompt=prompt, title=title
                    )
                    queued.append({"sessionId": state["sessionId"], "title": title, "prompt": prompt})
                return queued
        finally:
            await conn.close()
    finally:
        await redis.aclose()
