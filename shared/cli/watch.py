"""`opencode-sessions watch`: follow one session live through the gateway's SSE stream until it ends.

The gateway sends a `snapshot` (the whole session), then `update`s (seq + what changed), and a final `complete`
(the archived session). Text output prints what is new after each event: a part as it appears, a tool call each
time its status changes, text as it grows, then the final status. A dropped connection is resumed with
Last-Event-ID, so nothing is printed twice and nothing is missed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import click
import httpx

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
from shared.models import FINAL_STATUSES

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 45.0  # the gateway pings every 15 s: three missed pings mean the connection is gone
RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 5.0
SKIPPED_PARTS = frozenset({"step-start", "step-finish", "snapshot"})


@dataclass(slots=True)
class SseEvent:
    name: str
    data: str
    id: str | None


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Server-Sent Events framing: `event:`/`data:`/`id:` fields, a blank line ends an event."""
    name, event_id = "message", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(name, "\n".join(data), event_id)
            name, data, event_id = "message", [], None
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value


def apply_update(state: dict[str, Any], change: dict[str, Any]) -> None:
    """Advance a session object by one `update` event; messages and parts are ordered by id, as in OpenCode."""
    state.update(change.get("state") or {})
    state["seq"] = change["seq"]
    messages = {m["info"]["id"]: m for m in state.get("messages") or []}
    for info in change.get("messages") or []:
        messages.setdefault(info["id"], {"info": info, "parts": []})["info"] = info
    for part in change.get("parts") or []:
        message = messages.setdefault(part["messageID"], {"info": {"id": part["messageID"]}, "parts": []})
        parts = {p["id"]: p for p in message["parts"]}
        parts[part["id"]] = part
        message["parts"] = [parts[k] for k in sorted(parts)]
    for message_id in change.get("removedMessages") or []:
        messages.pop(message_id, None)
    for removed in change.get("removedParts") or []:
        message = messages.get(removed["messageID"])
        if message:
            message["parts"] = [p for p in message["parts"] if p["id"] != removed["id"]]
    state["messages"] = [messages[k] for k in sorted(messages)]


class Printer:
    """Prints, after each event, only what the terminal has not shown yet."""

    def __init__(self) -> None:
        self._status: str | None = None
        self._shown: dict[str, str] = {}  # part id -> what was last printed for it (tool status, part kind)
        self._text: dict[str, str] = {}  # text/reasoning part id -> the text printed so far
        self._errors: set[str] = set()  # message ids whose error was printed
        self._inline: str | None = None  # the part whose text is being written without a newline yet

    def line(self, text: str) -> None:
        self._end_inline()
        click.echo(text)

    def _end_inline(self) -> None:
        if self._inline is not None:
            click.echo("")
            self._inline = None

    def render(self, state: dict[str, Any]) -> None:
        status = str(state.get("status"))
        if self._status is None:
            where = state.get("sessionType") or "?"
            if state.get("ticketId"):
                where += f", ticket {state['ticketId']}"
            self.line(f"{state.get('sessionId')}  {status}  ({where})")
        elif status != self._status and status not in FINAL_STATUSES:
            self.line(f"status: {status}")
        self._status = status
        for message in state.get("messages") or []:
            info = message.get("info") or {}
            role = str(info.get("role") or "?")
            for part in message.get("parts") or []:
                self._part(role, part)
            error = info.get("error")
            if error and info.get("id") not in self._errors:
                self._errors.add(str(info.get("id")))
                self.line(f"  {role:9} error: {_error_text(error)}")

    def finish(self, state: dict[str, Any]) -> None:
        self.render(state)
        self.line(f"status: {state.get('status')}")
        if state.get("error"):
            self.line(f"session error: {' '.join(str(state['error']).split())}")

    def _part(self, role: str, part: dict[str, Any]) -> None:
        part_id, kind = str(part.get("id")), str(part.get("type"))
        if kind in ("text", "reasoning"):
            self._grow(role, part_id, kind, str(part.get("text") or ""))
        elif kind == "tool":
            state = part.get("state") if isinstance(part.get("state"), dict) else {}
            assert isinstance(state, dict)
            tool_status = str(state.get("status") or "?")
            text = f"  {role:9} tool {part.get('tool')} [{tool_status}]"
            if state.get("title"):
                text += f" {state['title']}"
            if tool_status == "error" and state.get("error"):
                text += f": {' '.join(str(state['error']).split())}"
            if self._shown.get(part_id) != text:
                self._shown[part_id] = text
                self.line(text)
        elif kind not in SKIPPED_PARTS and part_id not in self._shown:
            self._shown[part_id] = kind
            self.line(f"  {role:9} {kind}")

    def _grow(self, role: str, part_id: str, kind: str, text: str) -> None:
        shown = self._text.get(part_id)
        if not text or text == shown:
            return
        indent = " " * (len(f"  {role:9} {kind}: "))
        if shown is not None and text.startswith(shown) and self._inline == part_id:
            click.echo(text[len(shown) :].replace("\n", "\n" + indent), nl=False)
        else:
            again = " (revised)" if shown is not None else ""
            self._end_inline()
            click.echo(f"  {role:9} {kind}{again}: " + text.replace("\n", "\n" + indent), nl=False)
            self._inline = part_id
        self._text[part_id] = text


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        data = error.get("data") if isinstance(error.get("data"), dict) else {}
        assert isinstance(data, dict)
        text = data.get("message") or error.get("message") or error.get("name") or json.dumps(error)
    else:
        text = error
    return " ".join(str(text).split())


def gateway_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"invalid gateway URL {raw!r}: expected http(s)://host[:port]")
    return raw.rstrip("/")


def _http_error(response: httpx.Response) -> SessionLayerError:
    response.read()
    try:
        body = response.json()
        message = str(body.get("error")) if isinstance(body, dict) and body.get("error") else response.text
    except ValueError:
        message = response.text
    message = " ".join(message.split())[:300] or response.reason_phrase
    status = response.status_code
    if status == 400:
        return InvalidInput(message)
    if status == 401:
        return Unauthorized(f"the gateway wants a token (--token or GATEWAY_TOKEN): {message}")
    if status == 403:
        return Forbidden(message)
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
        self._url = f"{base}/sessions/{session_id}/stream"
        self._token = token
        self._as_json = as_json
        self._reconnect_timeout_s = reconnect_timeout_s
        self._printer = Printer()
        self._state: dict[str, Any] | None = None
        self._last_id: str | None = None
        self._opened = False  # this connection answered 200
        self._ever_opened = False  # some connection did: from then on a failure is retried, not fatal

    def run(self) -> dict[str, Any]:
        """The final session (from `complete`); raises a SessionLayerError when the watch cannot go on."""
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S)
        lost_since: float | None = None
        attempt = 0
        with httpx.Client(timeout=timeout) as client:
            while True:
                self._opened = False
                try:
                    final = self._connect(client)
                    if final is not None:
                        return final
                    reason = "the stream ended before the session did"
                except httpx.TransportError as exc:
                    reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
                    if not self._ever_opened:
                        raise Unavailable(f"the gateway at {self._base} is unreachable: {reason}") from exc
                except Unavailable as exc:  # the gateway answered 5xx (its Redis or PostgreSQL is down)
                    if not self._ever_opened:
                        raise
                    reason = exc.message
                now = time.monotonic()
                if self._opened or lost_since is None:
                    lost_since, attempt = now, 0
                elif now - lost_since > self._reconnect_timeout_s:
                    raise Unavailable(
                        f"lost the stream and could not resume it within {self._reconnect_timeout_s:g}s: {reason}"
                    )
                delay = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2**attempt)
                attempt += 1
                resume = f" after event {self._last_id}" if self._last_id else ""
                click.echo(f"connection lost ({reason}); reconnecting{resume} in {delay:.1f}s", err=True)
                time.sleep(delay)

    def _connect(self, client: httpx.Client) -> dict[str, Any] | None:
        headers = {"Accept": "text/event-stream"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self._last_id is not None:
            headers["Last-Event-ID"] = self._last_id
        with client.stream("GET", self._url, headers=headers) as response:
            if response.status_code != 200:
                raise _http_error(response)
            if self._ever_opened and not self._opened:
                click.echo("reconnected", err=True)
            self._opened = self._ever_opened = True
            for event in parse_sse(response.iter_lines()):
                final = self._handle(event)
                if final is not None:
                    return final
        return None

    def _handle(self, event: SseEvent) -> dict[str, Any] | None:
        if event.name == "ping":
            return None
        try:
            data = json.loads(event.data)
        except ValueError:
            raise OpenCodeError(f"the gateway sent a {event.name} event that is not JSON") from None
        if event.id is not None:
            self._last_id = event.id
        if self._as_json:
            click.echo(json.dumps({"event": event.name, "id": event.id, "data": data}, ensure_ascii=False))
        if event.name == "error":
            message = data.get("error") if isinstance(data, dict) else data
            raise NotFound(f"the gateway ended the stream: {message}")
        if event.name in ("snapshot", "complete"):
            self._state = data
        elif event.name == "update":
            if self._state is None:
                return None  # cannot happen: the gateway always starts with a snapshot
            apply_update(self._state, data)
        else:
            return None
        assert self._state is not None
        if event.name == "complete":
            if not self._as_json:
                self._printer.finish(self._state)
            return self._state
        if not self._as_json:
            self._printer.render(self._state)
        return None


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
    final = Follower(gateway_url(gateway), sid, token, as_json=as_json, reconnect_timeout_s=reconnect_timeout).run()
    if exit_status and final.get("status") != "completed":
        sys.exit(1)


def add_commands(group: click.Group) -> None:
    group.add_command(watch)
