"""How an OpenCode reply that is not the answer asked for becomes one of `shared.errors`' classes.

    404                                       -> NotFound (OpenCode's data.message)
    401, 403 (credentials refused), 429       -> TurnedAway (an Unreached: nothing was carried out)
    a redirect (3xx), never followed          -> TurnedAway
    any other status >= 400                   -> OpenCodeError(status_code=...)
    body that is not the JSON shape expected  -> OpenCodeError(status_code=None), "malformed response"

A refusal or a redirect is the server's configuration, not the session's: it lasts until an operator changes a
setting, so it names the server and the setting; a 429 is a rate limit (a proxy's, most likely). Each is retried like
a server that is down (until OPENCODE_RETRY_DEADLINE_MS), rather than taken for OpenCode refusing a prompt or an
answer, which ended its session at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.config import shown_value
from shared.errors import NotFound, OpenCodeError, Unreached
from shared.models import loads
from shared.opencode import shapes

PASSWORD_SETTING = (
    "set it in OPENCODE_SERVERS (name=http://opencode:PASSWORD@host:port), or OPENCODE_SERVER_PASSWORD for"
    " OPENCODE_URL's server"
)
URL_SETTING = "set the server's URL (OPENCODE_SERVERS, or OPENCODE_URL) to where it points"


@dataclass(frozen=True, slots=True)
class Origin:
    """The server a reply came from, as an error names it: its OPENCODE_SERVERS name when it has one."""

    url: str
    server: str | None = None
    password: bool = False

    def label(self) -> str:
        return f"OpenCode server {self.server!r} at {self.url}" if self.server else f"OpenCode at {self.url}"


class TurnedAway(Unreached):
    """OpenCode, or a proxy before it, turned the request away before carrying it out: the credentials refused, a
    redirect elsewhere, a rate limit. Sending it again is safe (and, but for the rate limit, useless until the
    server's settings are fixed)."""

    def __init__(self, message: str, origin: Origin, status_code: int) -> None:
        super().__init__(message)
        self.server = origin.server
        self.url = origin.url
        self.status_code = status_code


class Redirected(Exception):
    """A redirect the client does not follow (raised by `KeepAliveGets` and the aiohttp calls alike): one followed
    sent a POST's body, a prompt, wherever a proxy pointed, and the lean GETs took its empty body for the answer."""

    def __init__(self, status: int, location: str | None) -> None:
        super().__init__(f"{status} redirect to {location}")
        self.status = status
        self.location = location


def redirect_error(exc: Redirected, what: str, origin: Origin) -> TurnedAway:
    target = f"to {shown_value(exc.location)}" if exc.location else "without a Location"
    return TurnedAway(
        f"{origin.label()} answered {what} with a {exc.status} redirect {target}: not followed; {URL_SETTING}",
        origin,
        exc.status,
    )


def status_error(status: int, raw: bytes, what: str, origin: Origin) -> NotFound | OpenCodeError | TurnedAway:
    """OpenCode's error bodies are `{"name": …, "data": {"message": …}}` (or Effect's `{"_tag": …}`); its 401 has
    none (`opencode serve` with OPENCODE_SERVER_PASSWORD, the request without it or with another)."""
    try:
        body: Any = loads(raw)
    except ValueError:
        body = None
    name, message = None, None
    if isinstance(body, dict):
        name = body.get("name") or body.get("_tag")
        data = body.get("data")
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            message = data["message"]
    if message is None:
        message = preview(raw) if raw else "no body"
    if status == 404:
        return NotFound(message, detail=body)
    label = f"{status} {name}" if isinstance(name, str) else str(status)
    if status == 401:
        why = "the password configured for it is not the server's" if origin.password else "no password is configured"
        text = f"{origin.label()} refused the credentials of {what} ({label}): {why}; {PASSWORD_SETTING}"
        return TurnedAway(text, origin, status)
    if status == 403:
        check = "check the password configured for it and any proxy in front of it"
        return TurnedAway(
            f"{origin.label()} forbade {what} ({label}: {message}): {check}; {PASSWORD_SETTING}", origin, 403
        )
    if status == 429:
        text = f"{origin.label()} answered {what} with {label} ({message}): it limits the rate of requests; retried"
        return TurnedAway(text, origin, status)
    return OpenCodeError(f"OpenCode answered {what} with {label}: {message}", detail=body, status_code=status)


def decode(raw: bytes, shape: shapes.Shape, what: str) -> Any:
    """A response body as JSON of the expected shape (None when empty); anything else is OpenCodeError."""
    if not raw:
        value = None
    else:
        try:
            value = loads(raw)
        except ValueError as exc:
            raise OpenCodeError(
                f"malformed response from OpenCode: {what}: not JSON ({preview(raw)})", status_code=None
            ) from exc
    if not shape(value):
        raise OpenCodeError(
            f"malformed response from OpenCode: {what}: unexpected shape ({preview(raw)})",
            detail=value,
            status_code=None,
        )
    return value


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def preview(raw: bytes) -> str:
    text = raw[:120].decode("utf-8", "replace")
    return repr(text + "…" if len(raw) > 120 else text)
