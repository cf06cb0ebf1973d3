"""`OpenCodeClient`: the few OpenCode server calls this project makes, on aiohttp and a lean GET client.

Not httpx, because the poller sends ~4,000 requests a second: on this machine httpx costs 0.54-1.6 ms of CPU per
request, aiohttp 0.07-0.15 ms, and the GETs that make up the poller's ticks go through `KeepAliveGets` at ~0.03 ms
(`shared.opencode.keepalive`). orjson decodes the message lists: json.loads was 11 % of the poller's CPU in the
P2 profile. Every failure leaves this module as one of the
`shared.errors` classes, translated in `_send` (and `events`) alone:

    no connection made (refused, no route)    -> Unreached (an Unavailable: the request never left)
    reset, timeout                            -> Unavailable (the request may have been carried out)
    a reply that is not the answer            -> as `shared.opencode.replies` says (NotFound, TurnedAway, …)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote, urlencode

import aiohttp
import httptools

from shared.errors import OpenCodeError, Unavailable, Unreached
from shared.models import loads
from shared.opencode import settled, shapes
from shared.opencode.keepalive import DEFAULT_MAX_BODY_BYTES, BodyTooLarge, KeepAliveGets
from shared.opencode.replies import Origin, Redirected, decode, describe, redirect_error, status_error
from shared.opencode.settled import SettledHead, WholeList
from shared.opencode.types import Message, Session, SessionStatus

EVENT_IDLE_TIMEOUT_S = 20.0  # two missed heartbeats: a dead connection (OpenCode killed) is noticed in 20 s
UNREADABLE = "session-layer.unreadable"  # the `type` events() gives a record whose data is not JSON


class OpenCodeClient:
    """One OpenCode server (`opencode serve`), reached over a pooled aiohttp session.

    Use it as `async with OpenCodeClient(url) as oc:` or call `aclose()`; a closed client refuses further
    calls. `directory` is sent as `?directory=` on the instance-scoped routes (all but `/global/health`).
    `auth` (user, password) is sent as HTTP basic auth on every call (`opencode serve` with
    OPENCODE_SERVER_PASSWORD); `server` is its OPENCODE_SERVERS name, which its errors give. Each call is bounded
    by `timeout_s` in total, and each body (an `/event` record too) by `max_body_bytes` (OPENCODE_MAX_RESPONSE_BYTES):
    past it the call is an OpenCodeError, read no further. A redirect is never followed (`replies.Redirected`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        max_connections: int = 100,
        directory: str | None = None,
        auth: tuple[str, str] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        server: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = Origin(self.base_url, server, auth is not None)
        self._max_body_bytes = max_body_bytes
        self._headers = {"Authorization": aiohttp.encode_basic_auth(*auth)} if auth is not None else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._scope: dict[str, str] = {"directory": directory} if directory else {}
        self._http: aiohttp.ClientSession | None = None
        self._gets: KeepAliveGets | None = None
        self._closed = False

    async def __aenter__(self) -> OpenCodeClient:
        self._session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        self._closed = True
        if self._gets is not None:
            gets, self._gets = self._gets, None
            await gets.aclose()
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    async def health(self) -> dict[str, Any]:
        """`GET /global/health`: `{"healthy": true, "version": "…"}`."""
        return cast(dict[str, Any], await self._call("GET", "/global/health", shape=shapes.is_dict, scoped=False))

    async def create_session(
        self,
        *,
        title: str | None = None,
        agent: str | None = None,
        model: dict[str, str] | None = None,
        permission: list[dict[str, str]] | None = None,
    ) -> Session:
        """`POST /session`; `permission` is the session's own ruleset (`[{permission, pattern, action}]`)."""
        fields = {"title": title, "agent": agent, "model": model, "permission": permission}
        body = {k: v for k, v in fields.items() if v is not None}
        return cast(Session, await self._call("POST", "/session", body=body, shape=shapes.is_session))

    async def delete_session(self, session_id: str) -> bool:
        """`DELETE /session/{id}`: used to take back a session we created but could not record."""
        return cast(bool, await self._call("DELETE", f"/session/{_seg(session_id)}", shape=shapes.is_bool))

    async def get_session(self, session_id: str) -> Session:
        return cast(Session, await self._call("GET", f"/session/{_seg(session_id)}", shape=shapes.is_session))

    async def messages(self, session_id: str, *, limit: int | None = None) -> list[Message]:
        """The session's messages, oldest first; with `limit`, only the newest `limit` of them.

        Checked for what the poller's mirror relies on (`shapes.is_messages`): anything else raises OpenCodeError.
        """
        query = {"limit": str(limit)} if limit is not None else None
        path = f"/session/{_seg(session_id)}/message"
        return cast(list[Message], await self._call("GET", path, query=query, shape=shapes.is_messages))

    async def messages_if_changed(
        self, session_id: str, *, limit: int, digest: int | None
    ) -> tuple[list[Message] | None, int]:
        """The newest `limit` messages and their body's digest; None instead of the messages when the body is
        byte for byte the one `digest` was taken of. Most polls find nothing new: this one costs no decoding.

        The digest is Python's own hash of the bytes: SipHash, keyed per process, so a body cannot be made to
        collide with another without the key; 64 bits, and 5x faster than blake2b (3 µs for 15 KB, against 16).
        """
        path = f"/session/{_seg(session_id)}/message"
        what = f"GET {path}"
        raw = await self._send("GET", path, what, query={"limit": str(limit)}, body=None, scoped=True)
        fresh = hash(raw)
        if fresh == digest:
            return None, fresh
        return cast(list[Message], decode(raw, shapes.is_messages, what)), fresh

    async def messages_beyond(self, session_id: str, head: SettledHead | None, *, unsettled: int) -> WholeList:
        """The whole list, less its first `head.count` messages when the body begins with `head`'s very bytes (they
        are as they were when it was taken: the caller holds them); and the head to pass next, which settles all
        but the newest `unsettled` messages. See `shared.opencode.settled`."""
        path = f"/session/{_seg(session_id)}/message"
        what = f"GET {path}"
        raw = await self._send("GET", path, what, query=None, body=None, scoped=True)
        rest = settled.rest_of(raw, head)
        skipped = head.count if rest is not None and head is not None else 0
        messages = rest if rest is not None else cast(list[Message], decode(raw, shapes.is_messages, what))
        return WholeList(messages, skipped, settled.next_head(raw, head, messages, skipped, unsettled))

    async def prompt_async(
        self,
        session_id: str,
        *,
        message_id: str,
        text: str,
        agent: str | None = None,
        model: dict[str, str] | None = None,
    ) -> None:
        """Queue a prompt (OpenCode answers 204 at once, busy or not) under our own `msg_…` id."""
        body: dict[str, Any] = {"messageID": message_id, "parts": [{"type": "text", "text": text}]}
        if agent is not None:
            body["agent"] = agent
        if model is not None:
            body["model"] = model
        await self._call("POST", f"/session/{_seg(session_id)}/prompt_async", body=body, shape=shapes.is_nothing)

    async def run_again(self, session_id: str, *, message_id: str) -> None:
        """Run a stored prompt OpenCode left unanswered (its run stopped before reaching it: an abort, a permission
        rejected without a message): the same `messageID` with no parts adds nothing to the message and starts a
        loop that answers it (measured on 1.18.33: 204, answered once, the message not stored twice)."""
        body = {"messageID": message_id, "parts": []}
        await self._call("POST", f"/session/{_seg(session_id)}/prompt_async", body=body, shape=shapes.is_nothing)

    async def abort(self, session_id: str) -> bool:
        """Stop the session's run; OpenCode answers true even for an idle or unknown session."""
        return cast(bool, await self._call("POST", f"/session/{_seg(session_id)}/abort", shape=shapes.is_bool))

    async def status(self) -> dict[str, SessionStatus]:
        """Busy and retrying sessions only: an idle session is absent (and so is an entry of another shape)."""
        statuses = await self._call("GET", "/session/status", shape=shapes.is_dict)
        return cast(dict[str, SessionStatus], shapes.usable_statuses(statuses, f"{self.base_url}/session/status"))

    async def permissions(self) -> list[dict[str, Any]]:
        """`GET /permission`: every permission request waiting for an answer, for all sessions."""
        listed = await self._call("GET", "/permission", shape=shapes.is_list)
        return shapes.usable_requests(listed, f"{self.base_url}/permission")

    async def questions(self) -> list[dict[str, Any]]:
        """`GET /question`: every question waiting for an answer, for all sessions."""
        listed = await self._call("GET", "/question", shape=shapes.is_list)
        return shapes.usable_requests(listed, f"{self.base_url}/question")

    async def reply_permission(self, request_id: str, reply: str, message: str | None = None) -> bool:
        """`POST /permission/{id}/reply` with `once`, `always` or `reject`; an unknown id is NotFound."""
        body = {"reply": reply, **({"message": message} if message else {})}
        return cast(
            bool, await self._call("POST", f"/permission/{_seg(request_id)}/reply", body=body, shape=shapes.is_bool)
        )

    async def reply_question(self, request_id: str, answers: list[list[str]]) -> bool:
        """`POST /question/{id}/reply`: one list of chosen labels per question, in order."""
        path = f"/question/{_seg(request_id)}/reply"
        return cast(bool, await self._call("POST", path, body={"answers": answers}, shape=shapes.is_bool))

    async def reject_question(self, request_id: str) -> bool:
        return cast(bool, await self._call("POST", f"/question/{_seg(request_id)}/reject", shape=shapes.is_bool))

    async def events(self, *, idle_timeout_s: float = EVENT_IDLE_TIMEOUT_S) -> AsyncIterator[dict[str, Any]]:
        """`GET /event`: one dict per `data:` record, for as long as the stream lasts.

        OpenCode sends `server.connected` first and `server.heartbeat` every 10 s, so a stream that gives no whole
        record for `idle_timeout_s` (silent, or trickling bytes) is dead. A record whose data is not JSON comes as
        `{"type": UNREADABLE}`: it may have carried a delta. The iterator ends by raising Unavailable (or
        OpenCodeError: a record past `max_body_bytes`), never by returning.
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout_s, sock_read=idle_timeout_s)
        what = "GET /event"
        url = self.base_url + "/event"
        try:
            async with self._session().get(url, params=self._scope, timeout=timeout, allow_redirects=False) as resp:
                self._no_redirect(resp)
                if resp.status >= 400:
                    raise status_error(resp.status, await self._read(resp), what, self._origin)
                buffer = bytearray()
                searched = 0  # buffer[:searched] holds no record's end: a large record is scanned once, not per chunk
                recorded_at = time.monotonic()  # when the last whole record ended
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    start = 0
                    while (end := buffer.find(b"\n\n", max(start, searched - 1))) >= 0:
                        event = _event(bytes(buffer[start:end]))
                        if event is not None:
                            yield event
                        start = end + 2
                    del buffer[:start]
                    searched = len(buffer)
                    if len(buffer) > self._max_body_bytes:
                        raise BodyTooLarge(self._max_body_bytes)
                    recorded_at = _record_due(recorded_at, start > 0, idle_timeout_s)
        except Redirected as exc:
            raise redirect_error(exc, what, self._origin) from None
        except BodyTooLarge as exc:
            raise self._too_large(what) from exc
        except _NoRecord as exc:
            raise Unavailable(f"OpenCode at {self.base_url}: {what} sent no whole record for {exc}") from None
        except TimeoutError as exc:
            raise Unavailable(f"OpenCode at {self.base_url}: {what} silent for {idle_timeout_s:g} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"OpenCode at {self.base_url} unavailable: {what}: {describe(exc)}") from exc
        raise Unavailable(f"OpenCode at {self.base_url} closed {what}")

    def _keepalive(self) -> KeepAliveGets:
        if self._closed:
            raise RuntimeError("OpenCodeClient is closed")
        if self._gets is None:
            self._gets = KeepAliveGets(
                self.base_url,
                headers=self._headers,
                max_connections=self._max_connections,
                timeout_s=self._timeout_s,
                max_body_bytes=self._max_body_bytes,
            )
        return self._gets

    def _session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("OpenCodeClient is closed")
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._http = aiohttp.ClientSession(connector=connector, timeout=self._timeout, headers=self._headers)
        return self._http

    async def _call(
        self,
        method: str,
        path: str,
        *,
        shape: shapes.Shape,
        query: dict[str, str] | None = None,
        body: Any = None,
        scoped: bool = True,
    ) -> Any:
        """Send one request and return its JSON body (None when empty); the one place errors are translated."""
        what = f"{method} {path}"
        return decode(await self._send(method, path, what, query=query, body=body, scoped=scoped), shape, what)

    async def _send(
        self, method: str, path: str, what: str, *, query: dict[str, str] | None, body: Any, scoped: bool
    ) -> bytes:
        """One request's raw body; outages and HTTP errors raised as ours. GETs (the poller's per-tick calls) go
        through the lean keep-alive client, the rest through aiohttp."""
        params = {**self._scope, **(query or {})} if scoped else query
        try:
            if method == "GET" and body is None:
                target = f"{path}?{urlencode(params, quote_via=quote)}" if params else path
                status, raw = await self._keepalive().get(target)
            else:
                url = self.base_url + path
                async with self._session().request(
                    method, url, params=params, json=body, allow_redirects=False
                ) as resp:
                    self._no_redirect(resp)
                    status = resp.status
                    raw = await self._read(resp)
        except Redirected as exc:
            raise redirect_error(exc, what, self._origin) from None
        except BodyTooLarge as exc:
            raise self._too_large(what) from exc
        except aiohttp.ClientConnectorError as exc:  # no connection: the request never left
            raise Unreached(f"OpenCode at {self.base_url} unavailable: {what}: {describe(exc)}") from exc
        except TimeoutError as exc:  # aiohttp's timeouts subclass it
            raise Unavailable(
                f"OpenCode at {self.base_url} unavailable: {what} timed out after {self._timeout_s:g} s"
            ) from exc
        except (aiohttp.ClientError, OSError, httptools.HttpParserError) as exc:
            raise Unavailable(f"OpenCode at {self.base_url} unavailable: {what}: {describe(exc)}") from exc
        if status >= 400:
            raise status_error(status, raw, what, self._origin)
        return raw

    @staticmethod
    def _no_redirect(resp: aiohttp.ClientResponse) -> None:
        """A redirect is not followed (see `replies.Redirected`)."""
        if 300 <= resp.status < 400:
            raise Redirected(resp.status, resp.headers.get("Location"))

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, or BodyTooLarge once it passes the bound (said up front or as it arrives)."""
        if resp.content_length is not None and resp.content_length > self._max_body_bytes:
            raise BodyTooLarge(self._max_body_bytes)
        chunks, size = [], 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > self._max_body_bytes:
                raise BodyTooLarge(self._max_body_bytes)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, what: str) -> OpenCodeError:
        return OpenCodeError(
            f"OpenCode answered {what} with more than {self._max_body_bytes} bytes (OPENCODE_MAX_RESPONSE_BYTES):"
            " not read",
            status_code=None,
        )


class _NoRecord(Exception):
    """Bytes keep coming, but no whole record: a trickle that keeps the read timeout from ever firing."""


def _record_due(recorded_at: float, recorded: bool, idle_timeout_s: float) -> float:
    """When the last record ended; _NoRecord once it is `idle_timeout_s` ago. OpenCode's heartbeat is a record every
    10 s: a stream that gives none for that long is dead, however many bytes it trickles."""
    now = time.monotonic()
    if recorded:
        return now
    if now - recorded_at > idle_timeout_s:
        raise _NoRecord(f"{idle_timeout_s:g} s")
    return recorded_at


def _event(record: bytes) -> dict[str, Any] | None:
    """One SSE record of OpenCode's: `data: {json}` lines only (no event/id fields)."""
    data = b"".join(line[5:].strip() for line in record.split(b"\n") if line.startswith(b"data:"))
    if not data:
        return None
    try:
        value = loads(data)
    except ValueError:
        return {"type": UNREADABLE}  # it may have been a delta: the router marks a gap (was: dropped silently)
    return value if isinstance(value, dict) and isinstance(value.get("type"), str) else None


def _seg(value: str) -> str:
    return quote(value, safe="")
