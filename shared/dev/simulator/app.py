"""The simulator's Starlette app: OpenCode's routes, the `/__sim/` controls, and faults around both."""

from __future__ import annotations

import base64
import bisect
import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import cast

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from shared.dev.simulator.ask_routes import ROUTES as ASK_ROUTES
from shared.dev.simulator.ask_routes import permission_ruleset_problem
from shared.dev.simulator.edit_routes import ROUTES as EDIT_ROUTES
from shared.dev.simulator.engine import AGENT, JSON, MODEL_ID, PROVIDER_ID, VERSION, SimSession, Simulation, new_id
from shared.dev.simulator.errors import bad_request, session_or_error, simulation_of, unknown_error
from shared.dev.simulator.faults import Fault, misbehave, take_fault
from shared.dev.simulator.scenarios import DEFAULT_RETRY_DELAYS, answer
from shared.dev.simulator.validation import compact, json_body, prompt_problem
from shared.event_stream import EventStreamResponse
from shared.json_response import JSONResponse


@dataclass
class Stats:
    """What the simulator was asked (`GET /__sim/stats`): tests count retries and re-sent prompts with it."""

    requests: Counter[str] = field(default_factory=Counter)  # "GET /session/ses_…/message" -> n
    prompts: dict[str, Counter[str]] = field(default_factory=dict)  # "prompt_async.by_session" -> id -> n

    def count_prompt(self, route: str, session_id: str, message_id: str) -> None:
        self.prompts.setdefault(f"{route}.by_session", Counter())[session_id] += 1
        self.prompts.setdefault(f"{route}.by_message_id", Counter())[message_id] += 1

    def as_json(self, replies: Counter[str] | None = None) -> JSON:
        out: JSON = {"requests": dict(self.requests), "replies": dict(replies or {})}
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
        fault = take_fault(self.faults, method, path)
        if fault is None:
            return await super().__call__(scope, receive, send)
        await misbehave(fault, super().__call__, scope, receive, send)


def _sim(request: Request) -> SimulatorApp:
    return cast(SimulatorApp, request.app)


async def _accept_prompt(request: Request, route: str) -> tuple[SimSession, str] | JSONResponse:
    sess = session_or_error(request)
    if isinstance(sess, JSONResponse):
        return sess
    body, problem = await json_body(request)
    problem = problem or prompt_problem(body)
    if problem is not None:
        return bad_request(problem)
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
    sessions = [s.info for _, s in sorted(simulation_of(request).sessions.items())]  # ses_ ids: newest first
    sessions = [s for s in sessions if directory is None or s["directory"] == directory]
    limit = request.query_params.get("limit")
    return JSONResponse(sessions[: int(limit)] if limit and limit.isdigit() else sessions)


async def create_session(request: Request) -> Response:
    body, problem = await json_body(request)
    if problem is None and not isinstance(body, dict):
        problem = f"Expected object, got {compact(body)}"
    if problem is None and not isinstance(body.get("title", ""), str):
        problem = f'Expected string, got {compact(body["title"])}\n  at ["title"]'
    if problem is None and "permission" in body:
        problem = permission_ruleset_problem(body["permission"])
    if problem is not None:
        return bad_request(problem)
    directory = request.query_params.get("directory")
    simulation = simulation_of(request)
    sess = simulation.create_session(title=body.get("title"), directory=directory, permission=body.get("permission"))
    return JSONResponse(sess.info)


async def get_session(request: Request) -> Response:
    sess = session_or_error(request)
    return sess if isinstance(sess, JSONResponse) else JSONResponse(sess.info)


async def delete_session(request: Request) -> Response:
    """`DELETE /session/{id}`: `true`; 404 NotFoundError for an unknown session (OpenCode's spec)."""
    sess = session_or_error(request)
    if isinstance(sess, JSONResponse):
        return sess
    simulation = simulation_of(request)
    simulation.abort(sess.id)
    simulation.sessions.pop(sess.id, None)
    return JSONResponse(True)


async def session_status(request: Request) -> Response:
    simulation = simulation_of(request)
    return JSONResponse(simulation.statuses(request.query_params.get("directory") or simulation.directory))


async def list_messages(request: Request) -> Response:
    """Oldest first; `limit` keeps the newest N and links to the page before them with an opaque cursor."""
    sess = session_or_error(request)
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
    raw = compact({"id": message_id, "time": created}).encode()
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
    return unknown_error() if reply is None else JSONResponse({"info": reply.info, "parts": reply.parts})


async def abort(request: Request) -> Response:
    session_id = request.path_params["session_id"]
    if not session_id.startswith("ses"):
        return unknown_error()
    simulation_of(request).abort(session_id)
    return JSONResponse(True)


async def events(request: Request) -> Response:
    """`GET /event`: `data: {json}` records only; server.connected first, server.heartbeat when quiet."""
    app = _sim(request)
    simulation = app.simulation
    queue = simulation.bus.subscribe(request.query_params.get("directory") or simulation.directory)

    async def stream() -> AsyncIterator[str]:
        with queue:
            yield f"data: {compact({'id': new_id('evt'), 'type': 'server.connected', 'properties': {}})}\n\n"
            while True:
                line = None
                with anyio.move_on_after(app.heartbeat_s):
                    try:
                        line = await queue.receive()
                    except anyio.EndOfStream:
                        return
                if line is None:
                    line = compact({"id": new_id("evt"), "type": "server.heartbeat", "properties": {}})
                yield f"data: {line}\n\n"

    headers = {"content-type": "text/event-stream", "cache-control": "no-cache, no-transform"}
    return EventStreamResponse(stream(), headers=headers)


async def sim_stats(request: Request) -> Response:
    app = _sim(request)
    return JSONResponse(app.stats.as_json(app.simulation.asks.replies))


async def sim_reset(request: Request) -> Response:
    app = _sim(request)
    app.simulation.reset()
    app.faults.clear()
    app.stats = Stats()
    return JSONResponse(True)


async def sim_events(request: Request) -> Response:
    """Publish records on `/event` as given: what another OpenCode version, a plugin or a broken proxy could send."""
    body, problem = await json_body(request)
    records = body if isinstance(body, list) else None
    if (
        problem
        or records is None
        or not all(
            isinstance(r, dict) and isinstance(r.get("type"), str) and isinstance(r.get("properties"), dict)
            for r in records
        )
    ):
        return bad_request(problem or "expected a list of {type: string, properties: object}")
    for record in records:
        simulation_of(request).bus.publish(record["type"], record["properties"])
    return JSONResponse(len(records))


async def sim_faults(request: Request) -> Response:
    app = _sim(request)
    if request.method == "DELETE":
        app.faults.clear()
    elif request.method == "POST":
        body, problem = await json_body(request)
        try:
            app.faults.append(Fault.from_json(body))
        except (ValueError, TypeError) as exc:
            return bad_request(problem or str(exc))
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
        *ASK_ROUTES,
        *EDIT_ROUTES,
        Route("/__sim/stats", sim_stats),
        Route("/__sim/reset", sim_reset, methods=["POST"]),
        Route("/__sim/faults", sim_faults, methods=["GET", "POST", "DELETE"]),
        Route("/__sim/events", sim_events, methods=["POST"]),
    ]
    app = SimulatorApp(routes=routes, lifespan=_lifespan)
    app.simulation = Simulation(
        speed=speed, directory=directory or os.getcwd(), retry_delays=retry_delays, script=answer
    )
    app.faults = [replace(f) for f in faults]  # copies: counts go down as faults are used
    app.stats = Stats()
    app.heartbeat_s = heartbeat_s
    return app
