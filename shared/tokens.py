"""Gateway tokens: a scope and an expiry, signed with GATEWAY_AUTH_SECRET (HMAC-SHA256, stdlib only).

Format: ``v1.<payload>.<signature>``, both parts base64url without padding; the payload is the JSON object
``{"k": kind, "id": id, "exp": epoch s, "iat": epoch s}`` and the signature is HMAC-SHA256 over ``v1.<payload>``.
Stateless on purpose: the gateway checks a token with the secret alone, no store round trip; the price is that
a token cannot be revoked before it expires except by rotating the secret, so keep TTLs short.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Literal, get_args

from shared.errors import ConfigError, InvalidInput, Unauthorized
from shared.ids import parse_session_id, parse_ticket_id

ScopeKind = Literal["session", "ticket", "admin"]
SCOPE_KINDS: tuple[ScopeKind, ...] = get_args(ScopeKind)
VERSION = "v1"
MAX_TTL_S = 365 * 86_400
MAX_TOKEN_LENGTH = 2048  # far above any real token (~200 chars): bounds the work an unauthenticated caller causes

_TOKEN_RE = re.compile(r"v1\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_TTL_RE = re.compile(r"(\d{1,12})\s*([smhd]?)", re.IGNORECASE)
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


@dataclass(frozen=True, slots=True)
class Scope:
    """What a token lets its bearer read: one session, every session of one ticket, or everything (admin).

    Built only with a valid id (checked here, so a Scope is always safe to use in key names and queries).
    """

    kind: ScopeKind
    id: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "session":
            parse_session_id(self.id)
        elif self.kind == "ticket":
            parse_ticket_id(self.id)
        elif self.kind == "admin":
            if self.id is not None:
                raise InvalidInput("an admin scope has no id")
        else:
            raise InvalidInput(f"unknown scope kind {self.kind!r}: expected one of {', '.join(SCOPE_KINDS)}")

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    def allows_session(self, session_id: str, ticket_id: str | None) -> bool:
        """May the bearer read this session? A ticket token covers the sessions whose ticket is its ticket."""
        if self.kind == "admin":
            return True
        if self.kind == "session":
            return session_id == self.id
        return ticket_id is not None and ticket_id == self.id

    def allows_ticket(self, ticket_id: str) -> bool:
        """May the bearer list this ticket's sessions? Only its own ticket token, or admin."""
        return self.kind == "admin" or (self.kind == "ticket" and ticket_id == self.id)


def expiry(now: float, ttl_s: float) -> int:
    """The `exp` (epoch seconds) of a token minted at `now`: rounded up, so a TTL never comes out shorter."""
    return math.ceil(now + ttl_s)


def mint_token(secret: str, scope: Scope, ttl_s: float, *, now: float | None = None) -> str:
    """A signed token for `scope`, valid for `ttl_s` seconds (at most MAX_TTL_S) from `now`."""
    key = _key(secret)
    if not (math.isfinite(ttl_s) and 0 < ttl_s <= MAX_TTL_S):
        raise InvalidInput(f"invalid token TTL {ttl_s!r} s: expected more than 0 and at most {MAX_TTL_S} s (365 d)")
    issued = time.time() if now is None else now
    body = {"k": scope.kind, "id": scope.id, "exp": expiry(issued, ttl_s), "iat": int(issued)}
    payload = _b64encode(json.dumps(body, separators=(",", ":")).encode())
    return f"{VERSION}.{payload}.{_sign(key, payload)}"


def verify_token(secret: str, token: str, *, now: float | None = None) -> Scope:
    """The scope of a genuine, unexpired token; Unauthorized otherwise, saying why (never showing the token).

    The signature is checked (in constant time) before the payload is even decoded, so nothing an attacker
    writes reaches the JSON parser unless it was signed with our secret.
    """
    key = _key(secret)
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("malformed token")
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        raise Unauthorized("malformed token: expected v1.<payload>.<signature>")
    payload, signature = match.groups()
    if not hmac.compare_digest(_sign(key, payload), signature):
        raise Unauthorized("invalid token signature")
    try:
        body = json.loads(_b64decode(payload))
    except (ValueError, UnicodeDecodeError):  # json.JSONDecodeError and binascii.Error are ValueErrors
        raise Unauthorized("malformed token payload") from None
    if not isinstance(body, dict):
        raise Unauthorized("malformed token payload")
    exp = body.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise Unauthorized("malformed token payload: no expiry")
    if (time.time() if now is None else now) >= exp:
        raise Unauthorized("token expired")
    kind, scope_id = body.get("k"), body.get("id")
    if kind not in SCOPE_KINDS:
        raise Unauthorized(f"token has an unknown scope kind {str(kind)[:20]!r}")
    if scope_id is not None and not isinstance(scope_id, str):
        raise Unauthorized("malformed token payload: bad id")
    try:
        return Scope(kind, scope_id)
    except InvalidInput as exc:
        raise Unauthorized(f"token has an invalid scope: {exc.message}") from None


def parse_ttl(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `1h` or `7d`; InvalidInput unless more than 0 and at most 365 days."""
    match = _TTL_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidInput(
            f"invalid TTL {str(text)[:40]!r}: expected a whole number with an optional unit s, m, h or d (15m, 1h, 7d)"
        )
    seconds = int(match[1]) * _TTL_UNITS[match[2].lower()]
    if seconds <= 0:
        raise InvalidInput(f"invalid TTL {text!r}: it must be more than zero")
    if seconds > MAX_TTL_S:
        raise InvalidInput(f"invalid TTL {text!r}: tokens live at most 365d")
    return float(seconds)


def _key(secret: str) -> bytes:
    if not secret:
        raise ConfigError("GATEWAY_AUTH_SECRET is empty: tokens cannot be signed or checked without it")
    return secret.encode()


def _sign(key: bytes, payload: str) -> str:
    return _b64encode(hmac.new(key, f"{VERSION}.{payload}".encode("ascii"), hashlib.sha256).digest())


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """The caller has already checked the alphabet; padding is ours to restore (binascii.Error is a ValueError)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
