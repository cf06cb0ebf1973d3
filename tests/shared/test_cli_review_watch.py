"""`watch` against a gateway that answers garbage: events of other shapes, event ids no header can carry, a
service that is not the gateway, a base URL with a query; each is a clear error line or a clean resume."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from shared.cli.stream import SessionView, StreamEvent
from shared.dev.simulator.server import serve_in_thread
from tests.helpers import CLI_COMMAND, run_cli, single_error_line, sse_event, two_connection_gateway

pytestmark = pytest.mark.anyio

SID = "ses_000000000000REVIEWWATCHXX"
PART = {"id": "prt_1", "messageID": "msg_1", "type": "text", "text": "half a line"}
SNAPSHOT = {"sessionId": SID, "status": "running", "seq": 1, "live": True, "sessionType": "ask"}
SNAPSHOT |= {"messages": [{"info": {"id": "msg_1", "role": "assistant"}, "parts": [PART]}]}
COMPLETE = {**SNAPSHOT, "status": "completed", "seq": 2, "live": False}

MALFORMED: dict[str, tuple[str, Any, str]] = {  # what the gateway sends after the snapshot, what the error names
    "snapshot a list": ("snapshot", [1, 2], "its data is not an object"),
    "snapshot seq a string": ("snapshot", {**SNAPSHOT, "seq": "1"}, "seq is not an integer"),
    "messages an object": ("snapshot", {**SNAPSHOT, "messages": {"a": 1}}, "messages is not a list"),
    "a message a number": ("snapshot", {**SNAPSHOT, "messages": [1]}, "messages[0] is not an object"),
    "parts a string": ("snapshot", {**SNAPSHOT, "messages": [{"info": {"id": "m"}, "parts": "x"}]}, "parts is not"),
    "complete null": ("complete", None, "its data is not an object"),
    "update info without id": ("update", {"seq": 2, "messages": [{"role": "user"}]}, "messages[0].id is not a string"),
    "update part without message": ("update", {"seq": 2, "parts": [{"id": "p"}]}, "parts[0].messageID"),
    "update part a string": ("update", {"seq": 2, "parts": ["x"]}, "parts[0] is not an object"),
    "update state a list": ("update", {"seq": 2, "state": [1]}, "state is not an object"),
    "update removed part a number": ("update", {"seq": 2, "removedParts": [1]}, "removedParts[0] is not an object"),
    "update removed message a list": ("update", {"seq": 2, "removedMessages": [[1]]}, "removedMessages[0] is not"),
}


def gateway_sending(*frames: bytes) -> Starlette:
    """A gateway whose stream sends `frames`, then stays open (a watch that is not stopped by them never ends)."""

    async def stream(_request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for frame in frames:
                yield frame
            await anyio.sleep(60)

        return StreamingResponse(body(), media_type="text/event-stream")

    return Starlette(routes=[Route("/sessions/{sid}/stream", stream)])


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
async def test_a_malformed_event_is_one_line_naming_it(case: str) -> None:
    """Was: exit 1 as `error: unexpected KeyError: 'messageID'`, `AttributeError: 'list' object has no attribute
    'get'`, `TypeError: …` or `AssertionError:`, naming neither the gateway nor the event."""
    name, data, named = MALFORMED[case]
    frames = [sse_event(name, data, 2)] if name != "update" else [sse_event("snapshot", SNAPSHOT, 1)]
    frames += [sse_event(name, data, 2)] if name == "update" else []
    with serve_in_thread(gateway_sending(*frames)) as url:
        result = await run_cli(["watch", SID, "--gateway", url], {})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the gateway sent a malformed {name} event: "), lines
    assert named in lines[0]


@pytest.mark.parametrize(
    "event_id", ["1\u202e2", "é", "a\x1bb", "a b", "9" * 300], ids=["bidi", "latin1", "esc", "space", "long"]
)
async def test_an_event_id_no_header_can_carry_is_resumed_by_snapshot(event_id: str) -> None:
    """Was: an id outside Latin-1 ended the watch at its first reconnect (`unexpected UnicodeEncodeError`), and
    one with a control character, a space or of any length went back as a header as it was."""
    seen: list[str | None] = []
    first = [f"id: {event_id}\nevent: snapshot\ndata: {json.dumps(SNAPSHOT)}\n\n".encode()]
    with serve_in_thread(two_connection_gateway(seen, first, [sse_event("complete", COMPLETE, 2)])) as url:
        result = await run_cli(["watch", SID, "--gateway", url, "--reconnect-timeout", "30"], {})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result
    assert seen == [None, None]  # the second connection asked for a fresh snapshot
    assert result.stdout.splitlines()[-1] == "status: completed"


def test_a_seq_id_is_kept_to_resume_after() -> None:
    view = SessionView()
    view.apply(StreamEvent("snapshot", SNAPSHOT, "41"))
    assert view.last_id == "41"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/?x=1", "http://127.0.0.1:9/#top", "http://127.0.0.1:9?", "http://ex ample.com"]
)
async def test_a_gateway_url_with_a_query_fragment_or_space_is_exit_2(url: str) -> None:
    """Was: exit 1: the stream's path became part of the query or fragment (`Not Found`, `the gateway answered
    307`), or the host with a space was looked up (`unreachable`)."""
    single_error_line(await run_cli(["watch", SID, "--gateway", url], {}), 2, "invalid gateway URL")


async def test_a_refused_gateway_url_never_shows_its_password() -> None:
    """Was: `invalid gateway URL 'http://u:hunter2@h/?x=1'`, the password on the terminal and in CI logs."""
    result = await run_cli(["watch", SID, "--gateway", "http://u:hunter2@127.0.0.1:9/?x=1"], {})
    single_error_line(result, 2, "invalid gateway URL")
    assert "hunter2" not in result.stderr and "u:**********@" in result.stderr


async def test_a_gateway_url_with_a_path_prefix_is_taken() -> None:
    seen: list[str | None] = []
    app = Starlette(routes=[])
    app.mount("/proxy", two_connection_gateway(seen, [sse_event("complete", COMPLETE, 2)], []))
    with serve_in_thread(app) as url:
        result = await run_cli(["watch", SID, "--gateway", f"{url}/proxy/"], {})
    assert (result.returncode, result.stderr) == (0, ""), result


async def test_a_service_that_is_not_the_gateway_is_named() -> None:
    """Was: `error: Not Found`, the same words as for an unknown session, saying nothing of the URL."""
    with serve_in_thread(Starlette(routes=[])) as url:
        result = await run_cli(["watch", SID, "--gateway", f"{url}/wrong"], {})
    single_error_line(result, 1, f"/wrong/sessions/{SID}/stream (404 Not Found)", "--gateway")


async def test_the_error_line_starts_a_line_of_its_own() -> None:
    """stdout and stderr one file, as on a terminal. Was: text being written (no newline yet) was followed on the
    same line by `error: …` when the watch failed; only the reconnect timeout's message ended the line first."""
    frames = [sse_event("snapshot", SNAPSHOT, 1), sse_event("update", {"seq": 2, "parts": ["x"]}, 2)]
    with serve_in_thread(gateway_sending(*frames)) as url, tempfile.TemporaryFile() as out:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_URL")}
        command = [*CLI_COMMAND, "watch", SID, "--gateway", url]
        code = await anyio.to_thread.run_sync(
            lambda: subprocess.run(command, stdout=out, stderr=out, env=env, timeout=60, check=False).returncode
        )
        out.seek(0)
        lines = out.read().decode().splitlines()
    assert code == 1
    assert lines[-2:] == [
        "  assistant text: half a line",
        "error: the gateway sent a malformed update event: parts[0] is not an object",
    ]
