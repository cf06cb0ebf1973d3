"""The sessions pages under `/ui/` and their files under `/static/`: plain HTML and ES modules, no build step.

Each page is the same small HTML shell naming its page script; the scripts read the gateway's JSON API and SSE
streams through `static/opencode-stream.js`. The pages hold no data, so they need no token: the API calls do
(a token in the URL fragment, `#token=…`, or typed into the login prompt, kept in the tab's sessionStorage).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    MalformedRangeHeader,
    RangeNotSatisfiable,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

from shared.errors import InvalidInput
from shared.ids import parse_session_id, parse_ticket_id

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The pages load scripts and styles from /static and talk to this same origin only; the token never leaves the
# fragment or sessionStorage, and no Referer carries a URL of ours elsewhere.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · OpenCode sessions</title>
<link rel="stylesheet" href="{static}ui.css">
{script}</head>
<body data-page="{page}" data-id="{id}">
<header class="topbar">
  <a class="brand" href="{ui}">OpenCode sessions</a>
  <nav id="auth"></nav>
</header>
{main}
</body>
</html>
"""
LOADING = """<main id="app" aria-live="polite">
<p class="muted">Loading…</p><noscript>This page needs JavaScript.</noscript>
</main>"""
# An address that names no valid id: the same page frame, saying what is wrong, with the way back.
INVALID = """<main id="app">
<section class="card notice" data-testid="invalid-address">
<h1>Invalid address</h1>
<p>{message}</p>
<p><a href="{ui}">← All sessions</a></p>
</section>
</main>"""


def _page(page: str, title: str, depth: int, item_id: str = "") -> HTMLResponse:
    """`depth`: how many path segments below /ui/ the page is, so links work behind a path prefix too."""
    up = "../" * depth
    body = PAGE.format(
        title=html.escape(title),
        static=f"{up}../static/",
        script=f'<script type="module" src="{up}../static/{page}-page.js"></script>\n',
        page=page,
        id=html.escape(item_id, quote=True),
        ui=up or "./",
        main=LOADING,
    )
    return HTMLResponse(body, headers=HEADERS)


def _invalid(exc: InvalidInput) -> HTMLResponse:
    """A 400 page for an id that cannot be one, one segment below /ui/ like the pages it stands for."""
    up = "../"
    body = PAGE.format(
        title="Invalid address",
        static=f"{up}../static/",
        script="",
        page="invalid",
        id="",
        ui=up,
        main=INVALID.format(message=html.escape(exc.message), ui=up),
    )
    return HTMLResponse(body, status_code=400, headers=HEADERS)


async def sessions_page(request: Request) -> Response:
    return _page("sessions", "Sessions", 0)


async def session_page(request: Request) -> Response:
    try:
        sid = parse_session_id(request.path_params["session_id"])
    except InvalidInput as exc:
        return _invalid(exc)
    return _page("session", sid, 1, sid)


async def ticket_page(request: Request) -> Response:
    try:
        ticket = parse_ticket_id(request.path_params["ticket_id"])
    except InvalidInput as exc:
        return _invalid(exc)
    return _page("ticket", f"Ticket {ticket}", 1, ticket)


class _FileResponse(FileResponse):
    """A refused `Range` header is a JSON error like every other answer. Was Starlette's text/plain 400
    ("Range header: start must be less than end") and an empty text/plain 416."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader as exc:
            message = exc.content.removeprefix("Range header: ")
            raise InvalidInput(f"invalid Range header: {message}", {"header": "Range"}) from None
        except RangeNotSatisfiable as exc:
            content_range = {"Content-Range": f"bytes */{exc.max_size}"}
            raise HTTPException(416, "the Range header asks for bytes past the file's end", content_range) from None


class _StaticFiles(StaticFiles):
    """The modules and styles, revalidated on each load (they are small, and change with the gateway)."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response: Response = _FileResponse(full_path, status_code=status_code, stat_result=stat_result)
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            response = NotModifiedResponse(response.headers)
        if str(full_path).endswith(".ts"):  # TypeScript sources to copy, not MPEG transport streams
            response.headers["Content-Type"] = "text/plain; charset=utf-8"
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def routes() -> list[BaseRoute]:
    """`/ui/` (the sessions list), `/ui/sessions/{id}`, `/ui/tickets/{ticketId}` and `/static/…`."""
    return [
        Route("/ui", lambda request: RedirectResponse("ui/")),  # relative: works behind a path prefix
        Route("/ui/", sessions_page),
        Route("/ui/sessions/{session_id}", session_page),
        Route("/ui/tickets/{ticket_id}", ticket_page),
        Mount("/static", app=_StaticFiles(directory=STATIC_DIR), name="static"),
    ]
