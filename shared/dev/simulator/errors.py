"""OpenCode's error answers, as the simulator gives them: `{"name", "data"}` bodies."""

from __future__ import annotations

import os

from shared.dev.simulator.engine import JSON
from shared.json_response import JSONResponse


def error(status: int, name: str, data: JSON) -> JSONResponse:
    return JSONResponse({"name": name, "data": data}, status_code=status)


def bad_request(message: str) -> JSONResponse:
    return error(400, "BadRequest", {"message": message, "kind": "Payload"})


def unknown_error() -> JSONResponse:
    message = "Unexpected server error. Check server logs for details."
    return error(500, "UnknownError", {"message": message, "ref": f"err_{os.urandom(4).hex()}"})
