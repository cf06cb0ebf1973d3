"""JSON answers in our one encoding (shared.models.dumps): the gateway's and the simulator's.

Starlette's JSONResponse cannot encode a lone UTF-16 surrogate (it writes characters raw, and a lone surrogate has
no UTF-8 form): a session whose content holds one would be a 500. OpenCode's own server (JavaScript's
JSON.stringify) writes it as its `\\ud800` escape, and so does this.
"""

from __future__ import annotations

from typing import Any

from starlette import responses

from shared.models import dumps


class JSONResponse(responses.JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")
