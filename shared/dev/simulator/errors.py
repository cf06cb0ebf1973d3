"""OpenCode's error answers, as the simulator gives them (`{"name", "data"}` bodies), and the lookups routes make
before answering."""

from __future__ import annotations

import os
from typing import cast

from starlette.requests import Request

from shared.dev.simulator.engine import JSON, SimSession, Simulation
from shared.json_response import JSONResponse


def error(status: int, name: str, data: JSON) -> JSONResponse:
    return JSONResponse({"name": name, "data": data}, status_code=status)


def bad_request(message: str) -> JSONResponse:
    return error(400, "BadRequest", {"message": message, "kind": "Payload"})


def unknown_error() -> JSONResponse:
    message = "Unexpected server error. Check server logs for details."
    return error(500, "UnknownError", {"message": message, "ref": f"err_{os.urandom(4).hex()}"})


def simulation_of(request: Request) -> Simulation:
    """The simulator's state, from any of its routes."""
    return cast(Simulation, request.app.simulation)


def session_or_error(request: Request) -> SimSession | JSONResponse:
    """The session a route's path names, or OpenCode's answer when there is none."""
    session_id = request.path_params["session_id"]
    if not session_id.startswith("ses"):  # OpenCode fails its own path validation this way
        return unknown_error()
    sess = simulation_of(request).sessions.get(session_id)
    if sess is None:
        return error(404, "NotFoundError", {"message": f"Session not found: {session_id}"})
    return sess
