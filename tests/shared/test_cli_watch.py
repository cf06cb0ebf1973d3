"""`opencode-sessions watch` as a process, against a real gateway and poller (and a scripted SSE server)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette

from shared import commands
from shared.config import Secret
from shared.dev.processes import free_port
from shared.dev.simulator.server import serve_in_thread
from shared.tokens import Scope, mint_token
from tests.helpers import sse_event, two_connection_gateway

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-c", "from shared.cli import main; main()"]
UNKNOWN_SESSION = "ses_0000000000000000000000000A"
SECRET = "watch-test-secret-" + "x" * 32


async def cli(*args: str, timeout: float = 60, **env: str) -> tuple[int, str, str]:
    with anyio.fail_after(timeout):
        result = await anyio.run_process([*CLI, *args], env={**os.environ, **env}, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def enqueue(redis, db, opencode, prompt: str, ticket: str = "T-watch") -> str:
    state = await commands.enqueue(redis, db, opencode, session_type="ask", ticket_id=ticket, prompt=prompt)
    return str(state["sessionId"])


async def test_watch_follows_a_tool_session_live_to_completion(redis, db, opencode, make_gateway, make_worker):
    gateway = await make_gateway()
    sid = await enqueue(redis, db, opencode, "TOOL run it")
    env = {**os.environ, "GATEWAY_URL": gateway}
    async with await anyio.open_process([*CLI, "watch", sid], env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        out = b""
        with anyio.fail_after(30):
            while b"\n" not in out:  # the snapshot is printed: the watch is following a pending session
                out += await proc.stdout.receive()
        assert out.decode().startswith(f"{sid}  pending  (live, ask, ticket T-watch)")
        await make_worker()  # only now does a poller pick the session up
        with anyio.fail_after(60):
            async for chunk in proc.stdout:
                out += chunk
            await proc.wait()
        err = b"".join([chunk async for chunk in proc.stderr]).decode()
    text = out.decode()
    assert proc.returncode == 0, (text, err)
    lines = text.splitlines()
    assert "  user      text: TOOL run it" in lines
    assert "  assistant tool bash [completed] echo hello" in lines
    assert any(line.startswith("  assistant text: The tool ran.") for line in lines), text
    assert "status: running" in lines
    assert lines[-1] == "status: completed"
    assert text.index("tool bash [completed]") < text.index("status: completed")


async def test_watch_json_prints_one_event_per_line(redis, db, opencode, make_gateway, make_worker):
    gateway = await make_gateway()
    await make_worker()
    sid = await enqueue(redis, db, opencode, "REJECT me")
    code, out, err = await cli("watch", sid, "--json", GATEWAY_URL=gateway)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["event"] == "snapshot"
    assert events[-1]["event"] == "complete"
    assert {e["event"] for e in events} <= {"snapshot", "update", "complete"}
    final = events[-1]["data"]
    assert final["sessionId"] == sid and final["status"] == "error" and final["live"] is False
    assert events[-1]["id"] == str(final["seq"])
    seqs = [e["data"]["seq"] for e in events if e["event"] == "update"]
    assert seqs == sorted(seqs)


async def test_watch_keeps_a_prompt_with_unicode_line_separators_whole(redis, db, opencode, make_gateway, make_worker):
    """U+2028, U+2029 and U+0085 travel raw in the stream's JSON: were they line breaks, this prompt would forge
    a `complete` event. Output is split on newlines alone, as a JSON-lines reader must."""
    gateway = await make_gateway()
    await make_worker()
    prompt = "ECHO a\u2028\u2028event: complete\u2029data: {}\u0085\u2028\u2028b"
    sid = await enqueue(redis, db, opencode, prompt)
    code, out, err = await cli("watch", sid, "--json", GATEWAY_URL=gateway)
    assert code == 0, err
    events = [json.loads(line) for line in out.split("\n") if line]
    assert [e["event"] for e in events][:1] == ["snapshot"]
    assert events[-1]["event"] == "complete" and events[-1]["data"]["status"] == "completed"
    assert sum(e["event"] == "complete" for e in events) == 1
    user = events[-1]["data"]["messages"][0]
    assert user["info"]["role"] == "user"
    assert [p["text"] for p in user["parts"] if p["type"] == "text"] == [prompt]


async def test_watch_exit_status_flag_reports_a_failed_session(redis, db, opencode, make_gateway, make_worker):
    gateway = await make_gateway()
    await make_worker()
    sid = await enqueue(redis, db, opencode, "REJECT me")
    code, out, _ = await cli("watch", sid, GATEWAY_URL=gateway)
    assert code == 0  # ended: exit 0 whatever the status, which is printed last
    assert out.splitlines()[-2:] == ["status: error", "session error: Scripted rejection (prompt contained REJECT)"]
    code, out, _ = await cli("watch", sid, "--exit-status", GATEWAY_URL=gateway)
    assert code == 1
    assert "status: error" in out


async def test_watch_bad_id_is_exit_2_before_any_connection():
    code, out, err = await cli("watch", "not-a-session", GATEWAY_URL=f"http://127.0.0.1:{free_port()}")
    assert (code, out) == (2, "")
    assert err.startswith("error: invalid session id") and err.count("\n") == 1
    code, _, err = await cli("watch", UNKNOWN_SESSION, GATEWAY_URL="ftp://nowhere")
    assert code == 2 and err.startswith("error: invalid gateway URL")


async def test_watch_unknown_session_is_exit_1(redis, db, make_gateway):
    gateway = await make_gateway()
    code, out, err = await cli("watch", UNKNOWN_SESSION, GATEWAY_URL=gateway)
    assert (code, out) == (1, "")
    assert err == f"error: session {UNKNOWN_SESSION} not found\n"


async def test_watch_gateway_down_is_exit_1():
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = await cli("watch", UNKNOWN_SESSION, GATEWAY_URL=url)
    assert (code, out) == (1, "")
    assert err.startswith(f"error: the gateway at {url} is unreachable") and err.count("\n") == 1
    assert "Traceback" not in err


async def test_watch_sends_the_token_and_explains_a_missing_one(redis, db, opencode, make_gateway, make_worker):
    gateway = await make_gateway(gateway_auth_secret=Secret(SECRET), gateway_auth=True)
    await make_worker()
    sid = await enqueue(redis, db, opencode, "ECHO hi")
    code, _, err = await cli("watch", sid, GATEWAY_URL=gateway)
    assert code == 1 and "GATEWAY_TOKEN" in err and err.startswith("error:")
    token = mint_token(SECRET, Scope("session", sid), 60)
    code, out, err = await cli("watch", sid, GATEWAY_URL=gateway, GATEWAY_TOKEN=token)
    assert code == 0, err
    assert out.splitlines()[-1] == "status: completed"
    other = mint_token(SECRET, Scope("session", UNKNOWN_SESSION), 60)
    code, _, err = await cli("watch", sid, "--token", other, GATEWAY_URL=gateway)
    assert code == 1 and err.startswith("error:")


# --- reconnection, against a scripted stream ------------------------------------------------------------------------

MID = "msg_00000000000000000000000001"


def _scripted_gateway(seen: list[str | None]) -> Starlette:
    """First connection: snapshot (seq 2) and one update (seq 3), then the stream breaks off. The second must
    resume after event 3 and gets the rest; a third would be a bug."""
    snapshot = {"sessionId": UNKNOWN_SESSION, "status": "running", "sessionType": "ask", "ticketId": None}
    snapshot |= {"messages": [], "currentToolCalls": [], "error": None, "seq": 2, "live": True}
    part = {"id": "prt_1", "messageID": MID, "type": "text", "text": "hello"}
    first = [
        b"retry: 3000\n\n",
        sse_event("snapshot", snapshot, 2),
        sse_event(
            "update",
            {"seq": 3, "type": "update", "state": {}, "messages": [{"id": MID, "role": "assistant"}], "parts": [part]}
            | {"removedMessages": [], "removedParts": []},
            3,
        ),
    ]
    grown = part | {"text": "hello world"}
    tool = {"id": "prt_2", "messageID": MID, "type": "tool", "tool": "bash"}
    tool |= {"state": {"status": "completed", "title": "echo hi"}}
    final = snapshot | {"status": "completed", "seq": 4, "live": False}
    final["messages"] = [{"info": {"id": MID, "role": "assistant"}, "parts": [grown, tool]}]
    second = [
        sse_event(
            "update",
            {"seq": 4, "type": "update", "state": {"status": "completed"}, "messages": [], "parts": [grown, tool]}
            | {"removedMessages": [], "removedParts": []},
            4,
        ),
        sse_event("complete", final, 4),
    ]

    return two_connection_gateway(seen, first, second)


async def test_watch_resumes_a_dropped_stream_with_last_event_id():
    seen: list[str | None] = []
    with serve_in_thread(_scripted_gateway(seen)) as url:
        code, out, err = await cli("watch", UNKNOWN_SESSION, GATEWAY_URL=url)
    assert code == 0, err
    assert seen == [None, "3"]
    assert "reconnecting after event 3" in err and "reconnected" in err
    assert out.splitlines() == [
        f"{UNKNOWN_SESSION}  running  (live, ask)",
        "  assistant text: hello world",
        "  assistant tool bash [completed] echo hi",
        "status: completed",
    ]


def _append(seq: int, offset: int, delta: str) -> bytes:
    append = {"messageID": MID, "partID": "prt_1", "field": "text", "offset": offset}
    append |= {"length": offset + len(delta), "delta": delta}
    return sse_event("update", {"seq": seq, "type": "update", "sessionId": UNKNOWN_SESSION, "appends": [append]}, seq)


def _gapped_gateway(seen: list[str | None]) -> Starlette:
    """First connection: snapshot, an append that fits, then one at an offset the client does not hold. The client
    must come back without Last-Event-ID (for a fresh snapshot) and gets the rest."""
    base = {"sessionId": UNKNOWN_SESSION, "status": "running", "sessionType": "ask", "ticketId": None}
    base |= {"currentToolCalls": [], "error": None, "live": True}
    info = {"id": MID, "role": "assistant"}

    def session(seq: int, text: str, **extra: Any) -> dict[str, Any]:
        part = {"id": "prt_1", "messageID": MID, "type": "text", "text": text}
        return base | {"seq": seq, "messages": [{"info": info, "parts": [part]}]} | extra

    first = [sse_event("snapshot", session(2, "hello"), 2), _append(3, 5, " world"), _append(4, 99, "garbled")]
    final = session(6, "hello world, and more", status="completed", live=False)
    second = [
        sse_event("snapshot", session(5, "hello world, and"), 5),
        _append(6, 16, " more"),
        sse_event("complete", final, 6),
    ]

    return two_connection_gateway(seen, first, second)


async def test_watch_applies_appends_and_resyncs_by_snapshot_on_an_offset_it_does_not_hold():
    seen: list[str | None] = []
    with serve_in_thread(_gapped_gateway(seen)) as url:
        code, out, err = await cli("watch", UNKNOWN_SESSION, GATEWAY_URL=url)
    assert code == 0, err
    assert seen == [None, None]  # the resync asks for a snapshot, not a resume
    assert "out of step: an append at offset 99 to a text of length 11" in err
    assert "garbled" not in out
    assert out.splitlines()[-1] == "status: completed"
    assert "hello world, and more" in out
