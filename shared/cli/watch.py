"""`opencode-sessions watch`: follow one session live through the gateway's SSE stream until it ends.

The gateway sends a `snapshot` (the whole session), then `update`s (seq + what changed), and a final `complete`
(the archived session). Text output prints what is new after each event: a part as it appears, a tool call each
time its status changes, text as it grows, then the final status. A dropped connection is resumed with
Last-Event-ID, so nothing is printed twice and nothing is missed. A stream ends with its token (`token-expired`):
with GATEWAY_AUTH_SECRET at hand the watch mints a token for the session and resumes, otherwise it stops (exit 1).
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import click
import httpx
from click.core import ParameterSource

from shared.backoff import Backoff
from shared.cli.render import LivePrinter
from shared.cli.stream import SessionView, StreamEvent, StreamGap, iter_events
from shared.cli.terminal import echo, emit_json_line, one_line
from shared.config import Settings, shown_value
from shared.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    OpenCodeError,
    SessionLayerError,
    Unauthorized,
    Unavailable,
)
from shared.ids import parse_session_id
from shared.tokens import Scope, check_secret, mint_token

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 45.0  # the gateway pings every 15 s: three missed pings mean the connection is gone
RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 5.0
RENEWED_TOKEN_TTL_S = 3600.0
BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750's b64token


def gateway_url(raw: str, source: str = "--gateway") -> str:
    """The gateway's base URL, to which `/sessions/{id}/stream` is appended: a path prefix (a proxy's) is fine, a
    query or fragment is not. Was: `?x=1` or `#top` made the stream's path part of them (exit 1: `Not Found`, or
    `the gateway answered 307`), and a space in the host was tried as a name (exit 1: unreachable). An error names
    `source`, the option or the variable the URL came from."""
    try:
        parts = urlsplit(raw)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a malformed IPv6 host or a port out of range
        valid = False
    shown = shown_value(raw)  # was: a password in it printed as it was
    if not valid or any(char.isspace() or not char.isprintable() for char in raw):
        raise InvalidInput(f"invalid gateway URL {shown!r} ({source}): expected http(s)://host[:port][/path]")
    if "?" in raw or "#" in raw:
        raise InvalidInput(f"invalid gateway URL {shown!r} ({source}): the base URL takes no query (?) or fragment (#)")
    return raw.rstrip("/")


def bearer_token(raw: str | None) -> str | None:
    """The token as RFC 6750 writes one (a JWT is): anything else cannot go in a header. Was: exit 1, as an
    unexpected UnicodeEncodeError (`é`) or as an unreachable gateway (a newline)."""
    if raw is not None and not BEARER_TOKEN.fullmatch(raw):
        raise InvalidInput("--token (GATEWAY_TOKEN) is not a bearer token: expected letters, digits and -._~+/ only")
    return raw


def configured(name: str, value: str | None) -> tuple[str | None, str]:
    """An option's value and where it came from: its variable's read as every process reads its variables
    (surrounding whitespace ignored, empty the default) and named by it. Was: GATEWAY_URL or GATEWAY_TOKEN from
    a file with CRLF line ends (a trailing `\\r`) was exit 2, and a bad GATEWAY_URL was reported without its name."""
    ctx = click.get_current_context()
    option = next(p for p in ctx.command.params if p.name == name)
    if value is None or ctx.get_parameter_source(name) is not ParameterSource.ENVIRONMENT:
        return value, max(option.opts, key=len)
    return value.strip() or None, str(option.envvar)


def _http_error(response: httpx.Response) -> SessionLayerError:
    response.read()
    try:
        body = response.json()
        message = str(body.get("error")) if isinstance(body, dict) and body.get("error") else response.text
    except ValueError:
        message = response.text
    message = one_line(message)[:300] or response.reason_phrase
    status = response.status_code
    if status == 400:
        return InvalidInput(message)
    if status == 401:
        return Unauthorized(f"the gateway wants a token (--token or GATEWAY_TOKEN): {message}")
    if status == 403:
        return Forbidden(message)
    if status == 404 and message.lower() in ("not found", response.reason_phrase.lower()):
        # no route of the gateway's (another service, a wrong path): not what the gateway says of a session
        path = response.url.path  # not the whole URL: it may carry a password
        return NotFound(f"the gateway has no {path} (404 Not Found): is --gateway (GATEWAY_URL) the gateway's URL?")
    if status == 404:
        return NotFound(message)
    if status in (502, 503, 504):
        return Unavailable(f"the gateway answered {status}: {message}")
    return OpenCodeError(f"the gateway answered {status}: {message}", status_code=status)


class Follower:
    """One watch: connects, reconnects with Last-Event-ID, hands each event to the printer or prints it as JSON."""

    def __init__(
        self, base: str, session_id: str, token: str | None, *, as_json: bool, reconnect_timeout_s: float
    ) -> None:
        self._base = base
        self._session_id = session_id
        self._url = f"{base}/sessions/{session_id}/stream"
        self._token = token
        self._as_json = as_json
        self._reconnect_timeout_s = reconnect_timeout_s
        self._printer = LivePrinter()
        self._view = SessionView()
        self._opened = False  # this connection answered 200
        self._progressed = False  # this connection delivered an event: the retry budget starts again
        self._ever_opened = False  # some connection did: from then on a failure is retried, not fatal
        self._renewed = False  # the token expired and a fresh one was minted: resume at once
        self._untried = False  # the token was minted here and no connection has taken it yet

    def run(self) -> dict[str, Any]:
        """The final session (from `complete`); raises a SessionLayerError when the watch cannot go on. Its error
        line, or Ctrl-C's `interrupted`, starts a line of its own. Was: only the reconnect timeout's did; a
        malformed event or a vanished session while text was being written put `error: …` inside its line."""
        try:
            return self._follow()
        except (SessionLayerError, KeyboardInterrupt):
            self._interrupt_output()
            raise

    def _follow(self) -> dict[str, Any]:
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S)
        lost_since: float | None = None
        attempts = 0
        backoff = Backoff(RECONNECT_BASE_S, RECONNECT_CAP_S)
        with httpx.Client(timeout=timeout) as client:
            while True:
                self._opened = self._progressed = self._renewed = False
                try:
                    final = self._connect(client)
                    if final is not None:
                        return final
                    if self._renewed:
                        self._interrupt_output()
                        echo("the token expired; resuming with a fresh one", err=True)
                        continue
                    reason = "the stream ended before the session did"
                except httpx.TransportError as exc:
                    reason = one_line(f"{type(exc).__name__}: {exc}".rstrip(": "))
                    if not self._ever_opened:
                        raise Unavailable(f"the gateway at {self._base} is unreachable: {reason}") from exc
                except Unavailable as exc:  # the gateway answered 5xx (its Redis or PostgreSQL is down)
                    if not self._ever_opened:
                        raise
                    reason = exc.message
                except StreamGap as exc:  # an update that does not fit what we hold: start over from a snapshot
                    self._view.last_id = None
                    reason = f"out of step: {exc.message}"
                now = time.monotonic()
                if self._progressed or lost_since is None:
                    lost_since = now
                    backoff.reset()
                    attempts = 0
                elif now - lost_since > self._reconnect_timeout_s:
                    self._interrupt_output()
                    raise Unavailable(
                        f"lost the stream and could not resume it within {self._reconnect_timeout_s:g}s"
                        f" ({attempts} attempts): {reason}"
                    )
                attempts += 1
                delay = backoff.failed(now)
                last_id = self._view.last_id
                resume = f" after event {last_id}" if last_id else ""
                self._interrupt_output()
                echo(f"connection lost ({reason}); reconnecting{resume} in {delay:.1f}s", err=True)
                time.sleep(delay)

    def _interrupt_output(self) -> None:
        """When stdout and stderr are one terminal or file, a message must not land inside a half-written line."""
        if self._as_json:
            return
        try:
            same = os.path.samestat(os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno()))
        except (OSError, ValueError):  # not real files (captured): nothing to share a line with
            return
        if same:
            self._printer.interrupt()

    def _connect(self, client: httpx.Client) -> dict[str, Any] | None:
        headers = {"Accept": "text/event-stream"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self._view.last_id is not None:
            headers["Last-Event-ID"] = self._view.last_id
        with client.stream("GET", self._url, headers=headers) as response:
            if response.status_code != 200:
                self._refused(_http_error(response))
                return None
            self._untried = False
            if self._ever_opened and not self._opened:
                echo("reconnected", err=True)
            self._opened = self._ever_opened = True
            for event in iter_events(response):
                self._progressed = True
                final = self._handle(event)
                if final is not None:
                    return final
        return None

    def _refused(self, error: SessionLayerError) -> None:
        """A reconnect refused because the token expired while the stream was down (the gateway restarting): as
        after `token-expired`, renewed. Was: exit 1, the session still running. A token minted here and refused as
        expired at once (a gateway whose clock runs ahead) is not renewed again and again: exit 1."""
        expired = isinstance(error, Unauthorized) and error.message.endswith(": token expired")
        if not (expired and self._ever_opened and not self._untried):
            raise error
        self._renew_token()

    def _renew_token(self) -> None:
        """The gateway closes a stream when its token expires: mint another if this machine holds the secret."""
        secret = Settings.from_env().gateway_auth_secret
        if secret is None:
            raise Unauthorized(
                "the token expired and the gateway ended the stream: watch again with a fresh --token or "
                "GATEWAY_TOKEN (or set GATEWAY_AUTH_SECRET, and watch mints its own)"
            )
        secret_text = check_secret("GATEWAY_AUTH_SECRET", str(secret))  # one the gateway takes
        self._token = mint_token(secret_text, Scope("session", self._session_id), RENEWED_TOKEN_TTL_S)
        self._renewed = self._untried = True

    def _handle(self, event: StreamEvent) -> dict[str, Any] | None:
        if event.name == "ping":
            return None
        if self._as_json:
            emit_json_line({"event": event.name, "id": event.id, "data": event.data})
        if event.name == "error":
            message = event.data.get("error") if isinstance(event.data, dict) else event.data
            raise NotFound(f"the gateway ended the stream: {message}")
        if event.name == "token-expired":
            self._renew_token()
            return None
        if not self._view.apply(event):
            return None
        state = self._view.state
        assert state is not None
        if not self._as_json:
            (self._printer.finish if self._view.completed else self._printer.render)(state)
        return state if self._view.completed else None


@click.command()
@click.argument("session_id")
@click.option(
    "--gateway",
    "gateway",
    envvar="GATEWAY_URL",
    show_envvar=True,
    default=DEFAULT_GATEWAY_URL,
    show_default=True,
    metavar="URL",
    help="The gateway to stream from.",
)
@click.option("--token", envvar="GATEWAY_TOKEN", show_envvar=True, help="Bearer token (when the gateway has auth on).")
@click.option("--json", "as_json", is_flag=True, help="Print every event as one JSON object per line (NDJSON).")
@click.option(
    "--reconnect-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    metavar="SECONDS",
    help="Give up (exit 1) when a dropped stream cannot be resumed for this long.",
)
@click.option("--exit-status", is_flag=True, help="Exit 1 unless the session ends `completed` (error, cancelled).")
def watch(
    session_id: str, gateway: str, token: str | None, as_json: bool, reconnect_timeout: float, exit_status: bool
) -> None:
    """Follow a session live until it ends: parts as they appear, tool calls and their status, the final status.

    Exit 0 once the session has ended, whatever its final status (printed last; --exit-status makes an
    `error` or `cancelled` end exit 1). Exit 1 when the session is unknown, the gateway is unreachable or
    refuses the token; 2 for an invalid id or URL. A dropped connection is resumed with Last-Event-ID.
    """
    sid = parse_session_id(session_id)
    base, source = configured("gateway", gateway)
    token, _ = configured("token", token)
    final = Follower(
        gateway_url(base or DEFAULT_GATEWAY_URL, source),
        sid,
        bearer_token(token),
        as_json=as_json,
        reconnect_timeout_s=reconnect_timeout,
    ).run()
    if exit_status and final.get("status") != "completed":
        sys.exit(1)
