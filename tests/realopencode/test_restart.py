"""Against a real `opencode serve`: the `/event` connection cut mid-run, and OpenCode restarted mid-run.

What the real server (1.18.33) does with a run in flight when it stops, measured with SIGTERM and SIGKILL alike:
started again on the same port with the same HOME, XDG and work directories, it still has the session and every
stored message, but it neither resumes nor closes the run. The assistant message stays open for good (no
`time.completed`, no `error`, no `finish`), a text part keeps the "" it is stored with while streaming (the
streamed text is gone), a running tool part stays `running`, `GET /session/status` says idle, and no event
mentions the session again. An abort changes nothing. So the poller ends such a run itself once it has stayed
idle and open past ORPHANED_RUN_GRACE_MS (`poller.completion.run_orphaned`): status `error`, and the archive is
exactly what the restarted server returns.
"""

from __future__ import annotations

import signal
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import pytest

from poller.completion import ORPHANED_RUN_ERROR
from shared import commands
from shared.ids import SessionId
from shared.models import FINAL_STATUSES
from shared.opencode.client import OpenCodeClient
from shared.sessions import read_live
from tests.helpers import TcpProxy, wait_for
from tests.realopencode.harness import RealOpenCode, restart_opencode

pytestmark = [pytest.mark.anyio, pytest.mark.realopencode]


@pytest.fixture(scope="module")
def real_opencode(own_real_opencode: RealOpenCode) -> RealOpenCode:
    """A server of this module's own: its tests restart it."""
    return own_real_opencode


RUN_TIMEOUT_S = 60.0
GRACE_S = 1.0  # ORPHANED_RUN_GRACE_MS for these tests (default 30 s)


def worker_settings(**overrides: Any) -> dict[str, Any]:
    """Production-like cadence; OpenCode may be away for a restart (~4 s) without the session failing."""
    return {"poll_interval_s": 0.2, "poll_interval_events_s": 2.0, "opencode_retry_deadline_s": 60.0} | overrides


def assistant_parts(messages: list[Any]) -> list[Any]:
    return [p for m in messages if m["info"]["role"] == "assistant" for p in m["parts"]]


def live_text(messages: list[Any]) -> str:
    texts = [p.get("text") or "" for p in assistant_parts(messages) if p["type"] == "text"]
    return texts[-1] if texts else ""


async def archived(db: Any, session_id: str) -> tuple[str, str | None, list[Any]] | None:
    cur = await db.execute("SELECT status, error_message, messages FROM opencode_sessions WHERE id = %s", (session_id,))
    row = await cur.fetchone()
    return (row[0], row[1], row[2]) if row is not None and row[0] in FINAL_STATUSES else None


async def live_messages(redis: Any, session_id: str) -> list[Any]:
    live = await read_live(redis, SessionId(session_id))
    return list((live or {}).get("messages") or [])


async def test_a_cut_event_stream_loses_nothing(real_opencode: RealOpenCode, make_worker: Any, redis: Any, db: Any):
    """The worker reaches OpenCode through a proxy that cuts every connection and refuses new ones until OpenCode
    has sent deltas of the answer we never got; the archive must still be exactly the real server's list."""
    proxy = TcpProxy(urlsplit(real_opencode.url).port or 0)
    prompt = "SLOW answer across a cut event stream"
    async with OpenCodeClient(real_opencode.url) as opencode, anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        worker = await make_worker(opencode_url=f"http://127.0.0.1:{proxy.port}", **worker_settings())
        router = worker.router
        assert router is not None
        sid = (await commands.enqueue(redis, db, opencode, session_type="ask", prompt=prompt))["sessionId"]
        await wait_for(lambda: connected(router, 1), timeout=10, what="the event stream, opened for the session")
        sent = await tg.start(deltas_sent, real_opencode.url, sid)  # what OpenCode streams, seen directly

        async def streaming() -> str:  # while the answer streams, only the events carry its text
            return live_text(await live_messages(redis, sid))

        before = await wait_for(streaming, timeout=RUN_TIMEOUT_S, what="the answer streaming")
        seen: list[str] = []
        tg.start_soon(sample, streaming, seen)
        proxy.refusing = True
        await proxy.cut()  # every connection, the /event stream included
        missed_from = len(sent)
        await wait_for(lambda: disconnected(router), timeout=20, what="the poller noticing the cut")
        await wait_for(lambda: at_least(sent, missed_from + 2), timeout=20, what="deltas sent while we are away")
        proxy.refusing = False
        await wait_for(lambda: connected(router, 2), timeout=20, what="the event stream back")
        status, error, messages = await wait_for(lambda: archived(db, sid), timeout=RUN_TIMEOUT_S, what="archived")
        assert messages == await opencode.messages(sid)
        tg.cancel_scope.cancel()
    assert (status, error) == ("completed", None)
    final = live_text(messages)
    assert final == f"Slow answer to: {prompt}" and final.startswith(before) and final != before
    # deltas missed while /event was down are lost: the live text must stop growing rather than garble
    wrong = [text for text in seen if not final.startswith(text)]
    assert not wrong, f"clients saw text that is not a prefix of the answer: {wrong[:2]}"


async def deltas_sent(url: str, sid: str, *, task_status: anyio.abc.TaskStatus[list[str]]) -> None:
    """Our own `GET /event`, straight to OpenCode: every text delta of the session, in order."""
    sent: list[str] = []
    async with OpenCodeClient(url) as direct:
        async for event in direct.events():
            props = event.get("properties") or {}
            if event["type"] == "server.connected":
                task_status.started(sent)
            elif event["type"] == "message.part.delta" and props.get("sessionID") == sid:
                sent.append(str(props.get("delta")))


async def sample(read: Any, seen: list[str]) -> None:
    """Every distinct live text, until cancelled."""
    while True:
        text = await read()
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        await anyio.sleep(0.01)


async def at_least(items: list[Any], count: int) -> bool:
    return len(items) >= count


async def disconnected(router: Any) -> bool:
    return not router.healthy


async def connected(router: Any, count: int) -> bool:
    return bool(router.healthy and router.connections >= count)


@pytest.mark.parametrize(
    ("prompt", "sig"),
    [("SLOW answer cut short by a restart", signal.SIGTERM), ("TOOL SLOW cut short by a restart", signal.SIGKILL)],
    ids=["text-sigterm", "tool-sigkill"],
)
async def test_a_restart_mid_run_ends_the_session_archived_as_opencode_has_it(
    real_opencode: RealOpenCode, make_worker: Any, redis: Any, db: Any, prompt: str, sig: signal.Signals
) -> None:
    worker = await make_worker(opencode_url=real_opencode.url, **worker_settings(orphaned_run_grace_s=GRACE_S))
    router = worker.router
    assert router is not None
    async with OpenCodeClient(real_opencode.url) as opencode:
        state = await commands.enqueue(redis, db, opencode, session_type="ask", prompt=prompt)
    sid = state["sessionId"]

    async def mid_run() -> bool:
        parts = assistant_parts(await live_messages(redis, sid))
        if "TOOL" in prompt:
            return any(p["type"] == "tool" and p["state"]["status"] == "running" for p in parts)
        return any(p["type"] == "text" and p.get("text") for p in parts)  # streamed text, from the events

    await wait_for(mid_run, timeout=RUN_TIMEOUT_S, what="the run under way")
    starts = real_opencode.server.starts
    await anyio.to_thread.run_sync(lambda: restart_opencode(real_opencode.server, sig=sig))
    assert real_opencode.server.starts == starts + 1
    row = await wait_for(lambda: archived(db, sid), timeout=RUN_TIMEOUT_S, what=f"{sid} archived after the restart")
    status, error, messages = row

    async with OpenCodeClient(real_opencode.url) as opencode:
        server_messages = await opencode.messages(sid)
        assert await opencode.status() == {}  # the restarted server runs nothing
    assert messages == server_messages  # nothing lost, nothing invented: what the restarted server holds
    assert (status, error) == ("error", ORPHANED_RUN_ERROR)
    last = messages[-1]["info"]
    assert last["role"] == "assistant" and "completed" not in last["time"] and "error" not in last
    parts = assistant_parts(messages)
    if "TOOL" in prompt:
        assert [p["state"]["status"] for p in parts if p["type"] == "tool"] == ["running"]
    else:
        assert [p["text"] for p in parts if p["type"] == "text"] == [""]  # OpenCode lost the streamed text
    assert await live_messages(redis, sid) == []  # the live state is gone: the session ended
    # the session ended, so its place's /event connection (half-open, if the server was killed) is closed; the
    # next session on the restarted server opens a new one and runs to the end
    await wait_for(lambda: disconnected(router), timeout=10, what="the event stream closed with the session")
    async with OpenCodeClient(real_opencode.url) as opencode:
        after = await commands.enqueue(redis, db, opencode, session_type="ask", prompt="ECHO after the restart")
    await wait_for(lambda: connected(router, 2), timeout=45, what="the event stream on the restarted server")
    (status, error, _) = await wait_for(lambda: archived(db, after["sessionId"]), timeout=RUN_TIMEOUT_S)
    assert (status, error) == ("completed", None)
