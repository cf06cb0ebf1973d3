"""`watch` configured by GATEWAY_URL and GATEWAY_TOKEN reads them as every process reads its variables (README,
Configuration): surrounding whitespace is ignored, an empty value is the default, and a bad value is exit 2 with
one line naming the variable. Was: a value from a file with CRLF line ends (`http://gw:8080\\r`, a token and its
`\\r`) was exit 2, a blank GATEWAY_TOKEN was refused instead of unset, and `GATEWAY_URL=garbage` was reported as
`invalid gateway URL 'garbage'`, naming neither the variable nor where it came from."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from shared.dev.simulator.server import serve_in_thread
from tests.helpers import CLI_COMMAND, run_cli, single_error_line, sse_event

pytestmark = pytest.mark.anyio

SID = "ses_00000000000000000WATCHENV"
COMPLETE = {"sessionId": SID, "status": "completed", "seq": 2, "live": False, "sessionType": "ask", "messages": []}
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"


def gateway(authorizations: list[str | None]) -> Starlette:
    """A gateway whose stream ends the session at once; `authorizations` gets each request's header."""

    async def stream(request: Request) -> StreamingResponse:
        authorizations.append(request.headers.get("authorization"))

        async def body() -> AsyncIterator[bytes]:
            yield sse_event("complete", COMPLETE, 2)

        return StreamingResponse(body(), media_type="text/event-stream")

    return Starlette(routes=[Route("/sessions/{sid}/stream", stream)])


async def run_bytes(args: list[bytes], env: dict[bytes, bytes]) -> subprocess.CompletedProcess[str]:
    """The CLI with an environment of raw bytes (a variable that is not UTF-8)."""
    child_env = {k: v for k, v in os.environb.items() if not k.endswith(b"_URL") and k != b"GATEWAY_TOKEN"} | env
    result = await anyio.run_process([*(c.encode() for c in CLI_COMMAND), *args], env=child_env, check=False)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


async def test_surrounding_whitespace_is_ignored_and_a_blank_token_is_no_token() -> None:
    seen: list[str | None] = []
    with serve_in_thread(gateway(seen)) as url:
        padded = await run_cli(["watch", SID], {"GATEWAY_URL": f" {url}\r\n", "GATEWAY_TOKEN": f"{TOKEN}\r"})
        blank = await run_cli(["watch", SID], {"GATEWAY_URL": url, "GATEWAY_TOKEN": " \t"})
    for result in (padded, blank):
        assert (result.returncode, result.stderr) == (0, ""), result
    assert seen == [f"Bearer {TOKEN}", None]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        ([], {"GATEWAY_URL": "garbage"}, "GATEWAY_URL"),
        ([], {"GATEWAY_URL": "http://127.0.0.1:9/?x=1"}, "GATEWAY_URL"),
        (["--gateway", "garbage"], {"GATEWAY_URL": "http://127.0.0.1:9"}, "--gateway"),
        ([], {"GATEWAY_TOKEN": "not a token"}, "GATEWAY_TOKEN"),
    ],
    ids=["variable", "variable with a query", "option", "token"],
)
async def test_a_bad_value_is_exit_2_naming_where_it_came_from(args: list[str], env: dict[str, str], named: str):
    line = single_error_line(await run_cli(["watch", SID, *args], env), 2, named)
    if named == "--gateway":
        assert "GATEWAY_URL" not in line  # the variable was fine: the option given instead is what is wrong


async def test_a_variable_that_is_not_utf8_is_named() -> None:
    result = await run_bytes([b"watch", SID.encode()], {b"GATEWAY_URL": b"http://h\xff:8080"})
    single_error_line(result, 2, "GATEWAY_URL", "UTF-8")
