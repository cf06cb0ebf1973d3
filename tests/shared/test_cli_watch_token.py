"""`opencode-sessions watch` when the gateway ends the stream because its token expired (`token-expired`)."""

from __future__ import annotations

import os
import sys

import anyio
import pytest

from shared import commands
from shared.config import Secret
from shared.tokens import Scope, mint_token

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-c", "from shared.cli import main; main()"]
SECRET = "watch-token-test-secret-" + "x" * 32


def environment(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_AUTH_SECRET", "GATEWAY_TOKEN")}
    return {**base, **env}


async def test_without_the_secret_an_expired_token_ends_the_watch_with_one_line(redis, db, opencode, make_gateway):
    gateway = await make_gateway(gateway_auth_secret=Secret(SECRET), gateway_auth=True)
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO hi")  # nobody polls it
    token = mint_token(SECRET, Scope("session", state["sessionId"]), 5)  # outlives the CLI start (~1 s)
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [*CLI, "watch", state["sessionId"]], env=environment(GATEWAY_URL=gateway, GATEWAY_TOKEN=token), check=False
        )
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.startswith("error: the token expired and the gateway ended the stream") and err.count("\n") == 1


async def test_with_the_secret_the_watch_mints_a_fresh_token_and_resumes(
    redis, db, opencode, make_gateway, make_worker
):
    gateway = await make_gateway(gateway_auth_secret=Secret(SECRET), gateway_auth=True)
    state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO hi")
    token = mint_token(SECRET, Scope("session", state["sessionId"]), 5)  # outlives the CLI start (~1 s)
    env = environment(GATEWAY_URL=gateway, GATEWAY_TOKEN=token, GATEWAY_AUTH_SECRET=SECRET)
    async with await anyio.open_process([*CLI, "watch", state["sessionId"]], env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        err = b""
        with anyio.fail_after(30):
            while b"resuming with a fresh one" not in err:
                try:
                    err += await proc.stderr.receive()
                except anyio.EndOfStream:
                    pytest.fail(f"watch ended before renewing its token: {err.decode()}")
        await make_worker()  # the session runs only now, after the renewal
        out = b""
        with anyio.fail_after(60):
            async for chunk in proc.stdout:
                out += chunk
            await proc.wait()
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    assert lines[0].startswith(f"{state['sessionId']}  pending") and lines[-1] == "status: completed"
    assert sum(line.startswith(state["sessionId"]) for line in lines) == 1, "resumed: the header is not printed twice"
