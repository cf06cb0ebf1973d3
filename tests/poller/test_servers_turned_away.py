"""An OpenCode server that refuses the poller's credentials (a password rotated on one side only), as an operator
lives it: the sessions there are retried, not ended by one refusal, and end, if it lasts, naming what to fix."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from shared import commands
from shared.config import Secret, ServerConfig
from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.opencode.servers import OpenCodeServers
from shared.store import archive
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

PASSWORD = "right-password"


class Locked:
    """`opencode serve` with OPENCODE_SERVER_PASSWORD in front of the simulator: a request without the password is
    answered 401 with an empty body, as OpenCode answers it. `refuse_prompts`: that many `prompt_async` calls are
    refused all the same (the password rotated between a replica's poll and its send)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._expected = b"Basic " + base64.b64encode(f"opencode:{PASSWORD}".encode())
        self.refuse_prompts = 0
        self.prompt_status = 401  # what a refused prompt is answered (429: a rate limit in front of OpenCode)
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refusal := self._refusal(scope)) is not None:
            self.refused += 1
            headers = [(b"www-authenticate", b'Basic realm="Secure Area"'), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": refusal, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await self._app(scope, receive, send)

    def _refusal(self, scope: Scope) -> int | None:
        """The status to answer instead of the simulator's; None: the request goes through."""
        if scope["method"] == "POST" and scope["path"].endswith("/prompt_async") and self.refuse_prompts > 0:
            self.refuse_prompts -= 1
            return self.prompt_status
        return None if dict(scope["headers"]).get(b"authorization") == self._expected else 401


@pytest.fixture
def locked() -> Iterator[tuple[Locked, str]]:
    front = Locked(create_simulator(20.0, retry_delays=(0.2, 0.2)))
    with serve_in_thread(front) as url:
        yield front, url


def replica_servers(simulator_url: str, url: str, password: str) -> tuple[ServerConfig, ...]:
    return ServerConfig("default", simulator_url), ServerConfig("locked", url, Secret(password))


async def enqueue_locked(redis: Any, db: Any, simulator_url: str, url: str) -> str:
    """An `ask` session on the server `locked`, created with the right password."""
    placed = OpenCodeServers(replica_servers(simulator_url, url, PASSWORD))
    try:
        state = await commands.enqueue(redis, db, placed, session_type="ask", prompt="ECHO hi", server="locked")
    finally:
        await placed.aclose()
    return str(state["sessionId"])


async def final_row(db: Any, sid: str) -> Any:
    row = await archive.fetch(db, sid)
    return row if row is not None and not row.unfinished else None


@pytest.mark.parametrize("status", [401, 429])
async def test_a_prompt_refused_401_is_sent_again_not_the_end_of_the_session(
    status, make_worker, redis, db, simulator_url, locked
):
    """Was: the 401 was an OpenCodeError of status 401, "not retryable", so PromptDelivery took it for OpenCode
    refusing the prompt: the session ended at once in `error` ("OpenCode refused the prompt msg_…: OpenCode answered
    POST /session/ses_…/prompt_async with 401: no body"), although the prompt never reached OpenCode. Now it is a
    request that was not carried out: sent again (2 s later), and the run completes. So is a 429 (a rate limit in
    front of OpenCode, which turned the request away, as its status says, before anything was done)."""
    front, url = locked
    sid = await enqueue_locked(redis, db, simulator_url, url)
    front.refuse_prompts, front.prompt_status = 1, status
    await make_worker(opencode_servers=replica_servers(simulator_url, url, PASSWORD), opencode_retry_deadline_s=30.0)
    row = await wait_for(lambda: final_row(db, sid), timeout=30, what="the session archived")
    assert (row.status, row.error_message) == ("completed", None)
    assert front.refuse_prompts == 0 and front.refused == 1


async def test_a_replica_with_the_wrong_password_ends_sessions_naming_the_server_and_the_variable(
    make_worker, redis, db, simulator_url, locked
):
    """A replica left with the old password: every call to the server is refused. The sessions there are retried
    until OPENCODE_RETRY_DEADLINE_MS, then end in `error` saying which server refused and where its password is
    set; the replica logs that once, as an error, not as a traceback. Was: "OpenCode failed for 3 s: OpenCode
    answered GET /session/ses_…/message with 401: no body" (no server, no setting), and nothing but per-call
    warnings in the log."""
    url = locked[1]
    sid = await enqueue_locked(redis, db, simulator_url, url)
    with structlog.testing.capture_logs() as logs:
        await make_worker(opencode_servers=replica_servers(simulator_url, url, "old-password"))
        row = await wait_for(lambda: final_row(db, sid), timeout=30, what="the session archived")
    assert row.status == "error"
    assert "'locked'" in row.error_message and url in row.error_message and "401" in row.error_message
    assert "OPENCODE_SERVERS" in row.error_message and "old-password" not in row.error_message
    refused = [e for e in logs if e["event"] == "opencode_turned_away"]
    assert refused and all(e["log_level"] == "error" and e["server"] == "locked" for e in refused)
    assert len(refused) == 1  # once for the server, not once per board per tick
    assert not [e for e in logs if "exc_info" in e]
