"""`watch` whose token expires while the stream is down (the gateway restarting, a network drop): the reconnect is
a 401 `token expired` instead of the `token-expired` event the gateway sends at exp on an open stream. With
GATEWAY_AUTH_SECRET at hand the watch mints a session token and resumes, as it does after `token-expired`. Was:
exit 1, `the gateway wants a token (--token or GATEWAY_TOKEN): token expired`, the session still running."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from shared.dev.simulator.server import serve_in_thread
from shared.tokens import Scope, mint_token, verify_token
from tests.helpers import CLI_COMMAND, sse_event

pytestmark = pytest.mark.anyio

SID = "ses_0000000000000000WATCHRENEW"
SECRET = "watch-renew-test-secret-" + "x" * 32
PART = {"id": "prt_1", "messageID": "msg_1", "type": "text", "text": "hello"}
SNAPSHOT = {"sessionId": SID, "status": "running", "seq": 1, "live": True, "sessionType": "ask"}
SNAPSHOT |= {"messages": [{"info": {"id": "msg_1", "role": "assistant"}, "parts": [PART]}]}
COMPLETE = {**SNAPSHOT, "status": "completed", "seq": 2, "live": False}
EXPIRED = JSONResponse({"error": "token expired", "detail": None}, status_code=401)


def gateway(seen: list[tuple[str | None, str | None]], answers: list[str]) -> Starlette:
    """A stream answering connection N with answers[N]: `drop` (the snapshot, then the connection ends), `expired`
    (401), `complete` (for a token SECRET signed); `seen` gets each connection's token and Last-Event-ID."""

    async def stream(request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ") or None
        seen.append((token, request.headers.get("last-event-id")))
        answer = answers[min(len(seen), len(answers)) - 1]
        if answer == "expired":
            return EXPIRED
        frames = [sse_event("snapshot", SNAPSHOT, 1)] if answer == "drop" else [sse_event("complete", COMPLETE, 2)]

        async def body() -> AsyncIterator[bytes]:
            for frame in frames:
                yield frame

        return StreamingResponse(body(), media_type="text/event-stream")

    return Starlette(routes=[Route("/sessions/{sid}/stream", stream)])


async def watch(url: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_AUTH_SECRET", "GATEWAY_TOKEN", "GATEWAY_URL")}
    args = [*CLI_COMMAND, "watch", SID, "--reconnect-timeout", "30"]
    with anyio.fail_after(60):
        result = await anyio.run_process(args, env=base | {"GATEWAY_URL": url} | env, check=False)
    return subprocess.CompletedProcess(args, result.returncode, result.stdout.decode(), result.stderr.decode())


async def test_a_token_that_expired_while_the_stream_was_down_is_renewed_with_the_secret() -> None:
    token = mint_token(SECRET, Scope("session", SID), 7200)  # not what the watch mints (1 h)
    seen: list[tuple[str | None, str | None]] = []
    with serve_in_thread(gateway(seen, ["drop", "expired", "complete"])) as url:
        result = await watch(url, GATEWAY_TOKEN=token, GATEWAY_AUTH_SECRET=SECRET)
    assert result.returncode == 0, result
    assert "the token expired; resuming with a fresh one" in result.stderr
    assert result.stdout.splitlines()[-1] == "status: completed"
    assert [last_id for _, last_id in seen] == [None, "1", "1"]  # resumed where it was, nothing printed twice
    fresh = seen[2][0]
    assert fresh is not None and fresh != token and verify_token(SECRET, fresh) == Scope("session", SID)


async def test_without_the_secret_it_ends_with_one_line() -> None:
    token = mint_token(SECRET, Scope("session", SID), 7200)  # not what the watch mints (1 h)
    with serve_in_thread(gateway([], ["drop", "expired"])) as url:
        result = await watch(url, GATEWAY_TOKEN=token)
    assert result.stdout.startswith(f"{SID}  running")
    assert final_error(result).startswith("error: the token expired and the gateway ended the stream")


async def test_a_fresh_token_refused_as_expired_ends_the_watch_rather_than_mint_for_ever() -> None:
    """A gateway whose clock runs far ahead refuses every token as expired: one renewal, then exit 1."""
    seen: list[tuple[str | None, str | None]] = []
    with serve_in_thread(gateway(seen, ["drop", "expired"])) as url:
        token = mint_token(SECRET, Scope("session", SID), 7200)  # not what the watch mints (1 h)
        result = await watch(url, GATEWAY_TOKEN=token, GATEWAY_AUTH_SECRET=SECRET)
    assert "token expired" in final_error(result)
    assert len(seen) == 3 and seen[2][0] != seen[1][0]  # the original token, then one fresh one


def final_error(result: subprocess.CompletedProcess[str]) -> str:
    """The `error:` line the watch ended with (after its reconnect messages), with exit 1 and no traceback."""
    assert result.returncode == 1 and "Traceback" not in result.stderr, result
    last = result.stderr.splitlines()[-1]
    assert last.startswith("error: ") and result.stderr.count("error: ") == 1, result.stderr
    return last
