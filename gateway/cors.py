"""CORS as Starlette does it, except that a refused preflight is a JSON error like every other answer."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from shared.json_response import JSONResponse

REFUSED_PREFIX = "Disallowed CORS "  # Starlette's text/plain body: "Disallowed CORS origin, headers"
BODY_HEADERS = ("content-type", "content-length")


class JSONCORSMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        """Starlette's answer, its `400 text/plain` made `{"error", "detail": {"refused": [...]}}`, same headers."""
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = bytes(response.body).decode().removeprefix(REFUSED_PREFIX).split(", ")
        headers = {name: value for name, value in response.headers.items() if name not in BODY_HEADERS}
        body = {"error": f"CORS preflight refused: {', '.join(refused)} not allowed", "detail": {"refused": refused}}
        return JSONResponse(body, status_code=400, headers=headers)
