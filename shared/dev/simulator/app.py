"""A Starlette app that answers like an OpenCode 1.18.33 server, for tests and load runs.

`create_simulator()` builds it; the sessions and scripted runs live in `shared.dev.simulator.engine`. Besides
OpenCode's routes it serves controls under `/__sim/` (never subject to faults):

    GET    /__sim/stats    request counts, and prompt_async / message calls per session and per messageID
    POST   /__sim/reset    forget every session, count and fault
    GET    /__sim/faults   the active faults
    POST   /__sim/faults   add one: {"kind", "path"?, "method"?, "count"?, "ms"?} (see `Fault`)
    DELETE /__sim/faults   clear them

Run it as a process with `python -m shared.dev.simulator.app --port 4096 [--speed 2]`, or in a thread of
a test with `serve_in_thread(create_simulator(...))`.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any, Literal, cast, get_args

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.dev.simulator.engine import (
    AGENT,
    DEFAULT_RETRY_DELAYS,
    JSON,
    MODEL_ID,
    PROVIDER_ID,
    VERSION,
    SimSession,
    Simulation,
    new_id,
)

FaultKind = Literal["slow", "error500", "reset", "reset_after", "malformed"]
_PART_TYPES = ("text", "file", "agent", "subtask")
_PARTS_EXPECTED = " | ".join(f'{{ readonly "type": "{t}", ... }}' for t in _PART_TYPES)


@dataclass
class Fault:
    """A misbehaviour for the requests whose path matches `path` (fnmatch, e.g. "/session/*/message").

    slow: wait `ms` before answering normally · error500: answer 500 UnknownError · malformed: answer 200
    with a body that is not JSON · reset: drop the connection without answering · reset_after: handle the
    request, then drop the connection instead of answering. `count` requests, or all until cleared (None).
    """

    kind: FaultKind
    path: str = "*"
    method: str | None = None
    count: int | None = None
    ms: int = 0

    @classmethod
    def from_json(cls, body: Any) -> Fault:
        if not isinstance(body, dict) or body.get("kind") not in get_args(FaultKind):
            raise ValueError(f"a fault needs kind in {get_args(FaultKind)}, got {body!r}")
        fault = cls(**{k: v for k, v in body.items() if k in cls.__dataclass_fields__})
        if not isinstance(fault.path, str) or not isinstance(fault.ms, int) or fault.ms < 0:
            raise ValueError(f"bad fault {body!r}")
        if fault.count is not None and (not isinstance(fault.count, int) or fault.count < 1):
            raise ValueError(f"fault count must be a positive integer or null, got {fault.count!r}")
        return fault

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and fnmatchcase(path, self.path)


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)  # "GET /session/ses_…/message" -> n
    prompts: dict[str, Counter[str]] = field(default_factory=dict)  # "prompt_async.by_session" -> id -> n

    def count_prompt(self, route: str, session_id: str, message_id: str) -> None:
        self.prompts.setdefault(f"{route}.by_session", Counter())[session_id] += 1
        self.prompts.setdefault(f"{route}.by_message_id", Counter())[message_id] += 1

    def as_json(self) -> JSON:
        out: JSON = {"requests": dict(self.requests)}
        for route in ("prompt_async", "message"):
            by_session = self.prompts.get(f"{route}.by_session", Counter())
            by_message = self.prompts.get(f"{route}.by_message_id", Counter())
            out[route] = {"total": by_session.total(), "by_session": by_session, "by_message_id": by_message}
        return out


class SimulatorApp(Starlette):
    """The simulator's ASGI app: OpenCode's routes, the `/__sim/` controls, and fault injection around both."""

    simulation: Simulation
    faults: list[Fault]
    stats: Stats
    heartbeat_s: float

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/__sim/"):
            return await super().__call__(scope, receive, send)
        method, path = scope["method"], scope["path"]
        self.stats.requests[f"{method} {path}"] += 1
        fault = next((f for f in self.faults if f.matches(method, path)), None)
        if fault is None:
            return await super().__call__(scope, receive, send)
        if fault.count is not None:
            fault.count -= 1
            if fault.count == 0:
                self.faults.remove(fault)
        if fault.kind == "slow":
            await anyio.sleep(fault.ms / 1000)
            await super().__call__(scope, receive, send)
        elif fault.kind == "error500":
            await _unknown_error()(scope, receive, send)
        elif fault.kind == "malformed":
            await Response(b'{"truncated": [', media_type="application/json")(scope, receive, send)
        else:
            if fault.kind == "reset_after":
                await super().__call__(scope, receive, _discard)
            await _drop_connection(receive, send)


async def _discard(message: Message) -> None:
    return None


async def _drop_connection(receive: Receive, send: Send) -> None:
    """Close the TCP connection without a response, so the client sees a connection error."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)  # uvicorn's RequestResponseCycle
    if transport is None:  # another server: promise a body and never send it
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
        return
    transport.close()
    with anyio.move_on_after(1):  # until uvicorn notices, so it does not answer 500 for us
        while (await receive())["type"] != "http.disconnect":
            pass


def _error(status: int, name: str, data: JSON) -> JSONResponse:
    return JSONResponse({"name": name, "data": data}, status_code=status)


def _bad_request(message: str) -> JSONResponse:
    return _error(400, "BadRequest", {"message": message, "kind": "Payload"})


def _unknown_error() -> JSONResponse:
    message = "Unexpected server error. Check server logs for details."
    return _error(500, "UnknownError", {"message": message, "ref": f"err_{os.urandom(4).hex()}"})


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _sim(request: Request) -> SimulatorApp:
    return cast(SimulatorApp, request.app)


def _lookup(request: Request) -> SimSession | JSONResponse:
    session_id = request.path_params["session_id"]
    if not session_id.startswith("ses"):  # OpenCode fails its own path validation this way
        return _unknown_error()
    sess = _sim(request).simulation.sessions.get(session_id)
    if sess is None:
        return _error(404, "NotFoundError", {"message": f"Session not found: {session_id}"})
    return sess


async def _json_body(request: Request) -> tuple[Any, str | None]:
    raw = await request.body()
    try:
        return (json.loads(raw) if raw.strip() else {}), None
    except ValueError:
        return None, f"Invalid JSON: {raw[:80].decode('utf-8', 'replace')}"


def _prompt_problem(body: Any) -> str | None:
    """What OpenCode's schema would refuse in a prompt body, in its words; None when the body is fine."""
    if not isinstance(body, dict):
        return f"Expected object, got {_compact(body)}"
    if "parts" not in body:
        return 'Missing key\n  at ["parts"]'
    if not isinstance(body["parts"], list):
        return f'Expected array, got {_compact(body["parts"])}\n  at ["parts"]'
    for i, part in enumerate(body["parts"]):
        if not isinstance(part, dict) or part.get("type") not in _PART_TYPES:
            return f'Expected {_PARTS_EXPECTED}, got {_compact(part)}\n  at ["parts"][{i}]'
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            return f'Missing key\n  at ["parts"][{i}]["text"]'
    message_id = body.get("messageID")
    if message_id is not None and not (isinstance(message_id, str) and message_id.startswith("msg")):
        return f'Expected a string matching the pattern ^msg, got {_compact(message_id)}\n  at ["messageID"]'
    model = body.get("model")
    if model is not None and not (
        isinstance(model, dict) and isinstance(model.get("providerID"), str) and isinstance(model.get("modelID"), str)
    ):
        return f'Expected {{ readonly "providerID": string, readonly "modelID": string }}, got {_compact(model)}'
    if not isinstance(body.get("agent", ""), str):
        return f'Expected string, got {_compact(body["agent"])}\n  at ["agent"]'
    return None


async def _accept_prompt(request: Request, route: str) -> tuple[SimSession, str] | JSONResponse:
    sess = _lookup(request)
    if isinstance(sess, JSONResponse):
        return sess
    body, problem = await _json_body(request)
    problem = problem or _prompt_problem(body)
    if problem is not None:
        return _bad_request(problem)
    parts = [{k: v for k, v in p.items() if k not in ("id", "sessionID", "messageID")} for p in body["parts"]]
    model = body.get("model") or {"providerID": PROVIDER_ID, "modelID": MODEL_ID}
    app = _sim(request)
    message_id = app.simulation.prompt(
        sess, message_id=body.get("messageID"), parts=parts, agent=body.get("agent") or AGENT, model=model
    )
    app.stats.count_prompt(route, sess.id, message_id)
    return sess, message_id


async def health(request: Request) -> Response:
    return JSONResponse({"healthy": True, "version": VERSION})


async def list_sessions(request: Request) -> Response:
    directory = request.query_params.get("directory")
    sessions = [s.info for _, s in sorted(_sim(request).simulation.sessions.items())]  # ses_ ids: newest first
    sessions = [s for s in sessions if directory is None or s["directory"] == directory]
    limit = request.query_params.get("limit")
    return JSONResponse(sessions[: int(limit)] if limit and limit.isdigit() else sessions)


async def create_session(request: Request) -> Response:
    body, problem = await _json_body(request)
    if problem is None and not isinstance(body, dict):
        problem = f"Expected object, got {_compact(body)}"
    if problem is None and not isinstance(body.get("title", ""), str):
        problem = f'Expected string, got {_compact(body["title"])}\n  at ["title"]'
    if problem is not None:
        return _bad_request(problem)
    directory = request.query_params.get("directory")
    return JSONResponse(_sim(request).simulation.create_session(title=body.get("title"), directory=directory).info)


async def get_session(request: Request) -> Response:
    sess = _lookup(request)
    return sess if isinstance(sess, JSONResponse) else JSONResponse(sess.info)


async def delete_session(request: Request) -> Response:
    """`DELETE /session/{id}`: `true`; 404 NotFoundError for an unknown session (OpenCode's spec)."""
    sess = _lookup(request)
    if isinstance(sess, JSONResponse):
        return sess
    simulation = _sim(request).simulation
    simulation.abort(sess.id)
    simulation.sessions.pop(sess.id, None)
    return JSONResponse(True)


async def session_status(request: Request) -> Response:
    return JSONResponse(_sim(request).simulation.statuses())


async def list_messages(request: Request) -> Response:
    """Oldest first; `limit` keeps the newest N and links to the page before them with an opaque cursor."""
    sess = _lookup(request)
    if isinstance(sess, JSONResponse):
        return sess
    ids = sess.order
    before, limit_text = request.query_params.get("before"), request.query_params.get("limit")
    if before is not None:
        cursor = _decode_cursor(before)
        if cursor is None:
            return JSONResponse({"_tag": "BadRequest"}, status_code=400)
        ids = ids[: bisect.bisect_left(ids, cursor)]
    headers = {}
    if limit_text is not None:
        if not limit_text.isdigit():
            return JSONResponse({"_tag": "BadRequest"}, status_code=400)
        limit = int(limit_text)
        page = ids[len(ids) - limit :] if limit else []
        if len(page) < len(ids) and page:
            first = sess.messages[page[0]].info
            token = _encode_cursor(first["id"], first["time"]["created"])
            link = request.url.replace(query=f"limit={limit}&before={token}")
            headers = {"Link": f'<{link}>; rel="next"', "X-Next-Cursor": token}
        ids = page
    body = [{"info": sess.messages[i].info, "parts": sess.messages[i].parts} for i in ids]
    return JSONResponse(body, headers=headers)


def _encode_cursor(message_id: str, created: int) -> str:
    raw = _compact({"id": message_id, "time": created}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(token: str) -> str | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        return None
    ok = isinstance(value, dict) and isinstance(value.get("id"), str) and value["id"].startswith("msg")
    return cast(str, value["id"]) if ok else None


async def prompt_async(request: Request) -> Response:
    accepted = await _accept_prompt(request, "prompt_async")
    return accepted if isinstance(accepted, JSONResponse) else Response(status_code=204)


async def prompt_blocking(request: Request) -> Response:
    """Answers once the run ends (or is aborted) with the last assistant message of that prompt."""
    accepted = await _accept_prompt(request, "message")
    if isinstance(accepted, JSONResponse):
        return accepted
    sess, message_id = accepted
    if sess.run is not None:
        await sess.run.done.wait()
    replies = [m for i in reversed(sess.order) if (m := sess.messages[i]).info["role"] == "assistant"]
    reply = next((m for m in replies if m.info["parentID"] == message_id), replies[0] if replies else None)
    return _unknown_error() if reply is None else JSONResponse({"info": reply.info, "parts": reply.parts})


async def abort(request: Request) -> Response:
    session_id = request.path_params["session_id"]
    if not session_id.startswith("ses"):
        return _unknown_error()
    _sim(request).simulation.abort(session_id)
    return JSONResponse(True)


async def events(request: Request) -> Response:
    """`GET /event`: `data: {json}` records only; server.connected first, server.heartbeat when quiet."""
    app = _sim(request)
    queue = app.simulation.bus.subscribe()

    async def stream() -> AsyncIterator[str]:
        with queue:
            yield f"data: {_compact({'id': new_id('evt'), 'type': 'server.connected', 'properties': {}})}\n\n"
            while True:
                line = None
                with anyio.move_on_after(app.heartbeat_s):
                    try:
                        line = await queue.receive()
                    except anyio.EndOfStream:
                        return
                if line is None:
                    line = _compact({"id": new_id("evt"), "type": "server.heartbeat", "properties": {}})
                yield f"data: {line}\n\n"

    headers = {"content-type": "text/event-stream", "cache-control": "no-cache, no-transform"}
    return StreamingResponse(stream(), headers=headers)


async def sim_stats(request: Request) -> Response:
    return JSONResponse(_sim(request).stats.as_json())


async def sim_reset(request: Request) -> Response:
    app = _sim(request)
    app.simulation.reset()
    app.faults.clear()
    app.stats = Stats()
    return JSONResponse(True)


async def sim_faults(request: Request) -> Response:
    app = _sim(request)
    if request.method == "DELETE":
        app.faults.clear()
    elif request.method == "POST":
        body, problem = await _json_body(request)
        try:
            app.faults.append(Fault.from_json(body))
        except (ValueError, TypeError) as exc:
            return _bad_request(problem or str(exc))
    return JSONResponse([asdict(f) for f in app.faults])


@asynccontextmanager
async def _lifespan(app: SimulatorApp) -> AsyncIterator[None]:
    async with anyio.create_task_group() as task_group:
        app.simulation.task_group = task_group
        try:
            yield
        finally:
            app.simulation.task_group = None
            app.simulation.close()
            task_group.cancel_scope.cancel()


def create_simulator(
    speed: float = 1.0,
    *,
    faults: Iterable[Fault] = (),
    directory: str | None = None,
    retry_delays: Iterable[float] = DEFAULT_RETRY_DELAYS,
    heartbeat_s: float = 10.0,
) -> SimulatorApp:
    """A simulated OpenCode server. `speed` divides every scripted delay (2 = twice as fast); `retry_delays`
    are FAIL's waits before each retry (also divided by speed); `heartbeat_s` is the quiet time before a
    server.heartbeat (not scaled); `directory` is where sessions "run" (default: the current directory, as
    OpenCode uses its start directory). Serve it with uvicorn: runs are tasks of the app's lifespan."""
    routes = [
        Route("/global/health", health),
        Route("/event", events),
        Route("/session", list_sessions),
        Route("/session", create_session, methods=["POST"]),
        Route("/session/status", session_status),
        Route("/session/{session_id}", get_session),
        Route("/session/{session_id}", delete_session, methods=["DELETE"]),
        Route("/session/{session_id}/message", list_messages),
        Route("/session/{session_id}/message", prompt_blocking, methods=["POST"]),
        Route("/session/{session_id}/prompt_async", prompt_async, methods=["POST"]),
        Route("/session/{session_id}/abort", abort, methods=["POST"]),
        Route("/__sim/stats", sim_stats),
        Route("/__sim/reset", sim_reset, methods=["POST"]),
        Route("/__sim/faults", sim_faults, methods=["GET", "POST", "DELETE"]),
    ]
    app = SimulatorApp(routes=routes, lifespan=_lifespan)
    app.simulation = Simulation(speed=speed, directory=directory or os.getcwd(), retry_delays=retry_delays)
    app.faults = [replace(f) for f in faults]  # copies: counts go down as faults are used
    app.stats = Stats()
    app.heartbeat_s = heartbeat_s
    return app


class SimulatorServer(uvicorn.Server):
    """uvicorn's Server, but at shutdown it first stops the runs and ends the `/event` streams: uvicorn
    waits for open responses before the app's lifespan ends, and an event stream never ends by itself."""

    def __init__(self, config: uvicorn.Config, *, port_file: str | None = None) -> None:
        super().__init__(config)
        self.port_file = port_file

    @property
    def port(self) -> int:
        return int(self.servers[0].sockets[0].getsockname()[1])

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.port_file and self.started:
            await anyio.Path(self.port_file + ".tmp").write_text(str(self.port))
            os.replace(self.port_file + ".tmp", self.port_file)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if isinstance(self.config.app, SimulatorApp):
            self.config.app.simulation.close()
        await super().shutdown(sockets=sockets)


@contextmanager
def serve_in_thread(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` (a simulator, or any ASGI app) with uvicorn in a daemon thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning", timeout_graceful_shutdown=5)
    server = SimulatorServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="opencode-simulator", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the OpenCode simulator did not start")
            time.sleep(0.005)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.dev.simulator.app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4096, help="0 picks a free port (see --port-file)")
    parser.add_argument("--speed", type=float, default=1.0, help="divides every scripted delay")
    parser.add_argument("--directory", default=None, help="the sessions' directory (default: current)")
    parser.add_argument("--port-file", default=None, help="write the bound port here once listening")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_simulator(args.speed, directory=args.directory)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, lifespan="on", log_config=None, timeout_graceful_shutdown=5
    )
    SimulatorServer(config, port_file=args.port_file).run()


if __name__ == "__main__":
    main()
