"""Helpers the tests share: waiting on a condition with a deadline, child processes on loopback, the simulator's
controls, a scripted SSE gateway."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from shared import commands
from shared.config import ServerConfig
from shared.ids import SessionId
from shared.opencode.servers import OpenCodeServers
from shared.store.live import read_record

T = TypeVar("T")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


async def wait_for(
    check: Callable[[], Awaitable[T]], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds (never a sleep-and-hope)."""
    deadline = anyio.current_time() + timeout
    last: T | None = None
    while anyio.current_time() < deadline:
        last = await check()
        if last:
            return last
        await anyio.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or check!r}; last value: {last!r}")


class Child:
    """A `python -m MODULE` child with its output in a log file; stopped (then killed) on close."""

    def __init__(self, name: str, module: str, args: list[str], env: Mapping[str, str]) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 10.0) -> int:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.alive():
            self.terminate()
        self._log.close()


def wait_port(port: int, timeout: float = 20.0, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise AssertionError(f"{child.name} exited early:\n{child.output()[-3000:]}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


class TcpProxy:
    """A loopback TCP proxy whose connections a test can cut at once (e.g. OpenCode's /event stream)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._streams: list[anyio.abc.ByteStream] = []
        self.connections = 0
        self.refusing = False  # True: new connections are closed at once (the network is down)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        await listener.serve(self._handle)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        if self.refusing:
            await client.aclose()
            return
        self.connections += 1
        try:
            upstream = await anyio.connect_tcp("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        self._streams += [client, upstream]
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pipe, client, upstream, tg)
            tg.start_soon(self._pipe, upstream, client, tg)

    @staticmethod
    async def _pipe(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream, tg: anyio.abc.TaskGroup) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        tg.cancel_scope.cancel()
        for stream in (source, sink):
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    async def cut(self) -> None:
        """Close every connection open right now; new ones are accepted as before."""
        streams, self._streams = self._streams, []
        for stream in streams:
            await stream.aclose()


CLI_SCRIPT = Path(sys.executable).with_name("opencode-sessions")
CLI_COMMAND = (
    [str(CLI_SCRIPT)] if CLI_SCRIPT.exists() else [sys.executable, "-c", "from shared.cli import main; main()"]
)


async def run_cli(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`opencode-sessions ARGS` as a user runs it, configured only by `env` (no outer REDIS_URL etc. leaks in)."""
    child_env = {k: v for k, v in os.environ.items() if not k.endswith("_URL")} | dict(env)
    result = await anyio.run_process([*CLI_COMMAND, *args], env=child_env, check=False)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


def single_error_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The one `error:` line of a failed CLI run, with its exit code, nothing on stdout and no traceback."""
    assert result.returncode == code, result
    assert result.stdout == "" and "Traceback" not in result.stderr, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


async def sim(simulator_url: str, method: str, path: str, body: Any = None) -> Any:
    """One call to a simulator's `/__sim/` controls (stats, faults), its JSON answer."""
    async with httpx.AsyncClient(base_url=simulator_url) as client:
        response = await client.request(method, path, json=body)
        response.raise_for_status()
        return response.json()


async def waiting_entry(redis: Any, sid: str) -> dict[str, Any]:
    """The first request a session waits on, once its live status is `waiting`."""

    async def check() -> Any:
        record = await read_record(redis, SessionId(sid))
        return record.state.pending[0] if record is not None and record.state.status == "waiting" else None

    entry: dict[str, Any] = await wait_for(check, timeout=30, what="status waiting")
    return entry


async def stored(opencode: Any, sid: str, message_id: str) -> bool:
    """Whether OpenCode stores the message (a follow-up queued behind a run shows before it is answered)."""
    return any(m["info"]["id"] == message_id for m in await opencode.messages(sid))


def sse_event(name: str, data: Any, event_id: int) -> bytes:
    """One SSE event as the gateway frames it."""
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data)}\n\n".encode()


def two_connection_gateway(seen: list[str | None], first: list[bytes], second: list[bytes]) -> Starlette:
    """A gateway whose stream sends `first` on the first connection, `second` on the next, then nothing; `seen`
    gets each connection's Last-Event-ID."""

    async def stream(request: Request) -> StreamingResponse:
        seen.append(request.headers.get("last-event-id"))
        frames = [first, second][min(len(seen), 2) - 1] if len(seen) <= 2 else []

        async def body() -> AsyncIterator[bytes]:
            for frame in frames:
                yield frame

        return StreamingResponse(body(), media_type="text/event-stream")

    return Starlette(routes=[Route("/sessions/{sid}/stream", stream)])


def collector_garbage(*packages: str) -> list[str]:
    """What a full collection would free of these packages (their objects, and frames of their code), then frees it.

    Run the code under test with the collector off (`gc.disable()`): what this finds is what only a collection
    frees, and the poller's and gateway's collector thresholds make full collections rare, so in production it would
    stay in memory until the process ends."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = []
        for thing in gc.garbage:
            frame = isinstance(thing, types.FrameType)
            name = str(thing.f_globals.get("__name__", "")) if frame else type(thing).__module__
            if name.split(".")[0] in packages:
                found.append(f"{name}.{thing.f_code.co_name if frame else type(thing).__qualname__}")
        return found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()


async def enqueue_on_retired_server(redis: Any, db: Any, default_url: str, retired_url: str) -> str:
    """An `ask` session enqueued on a server named `retired`, which the replicas under test are not given: its id."""
    placed = OpenCodeServers((ServerConfig("default", default_url), ServerConfig("retired", retired_url)))
    try:
        state = await commands.enqueue(redis, db, placed, session_type="ask", prompt="ECHO x", server="retired")
    finally:
        await placed.aclose()
    return str(state["sessionId"])
