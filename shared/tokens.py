"""Gateway tokens: standard JWTs (HS256, signed with GATEWAY_AUTH_SECRET) carrying one scope and an expiry.

Claims: ``sub`` is the scope (``session:ses_…``, ``ticket:<ticket id>`` or ``admin``), ``exp`` the expiry and
``iat`` the issue time, both whole epoch seconds. Any backend can mint one with its own JWT library knowing only
this; the gateway accepts HS256 alone (never ``alg: none`` or another algorithm), requires ``exp``, and allows no
clock leeway. Stateless on purpose: a token is checked with the secret alone, no store round trip; the price is
that it cannot be revoked before it expires except by rotating the secret, so keep TTLs short.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, get_args

import jwt
from jwt.types import Options
from jwt.warnings import InsecureKeyLengthWarning

from shared.config import is_placeholder
from shared.errors import ConfigError, InvalidInput, Unauthorized
from shared.ids import parse_session_id, parse_ticket_id

ScopeKind = Literal["session", "ticket", "admin"]
SCOPE_KINDS: tuple[ScopeKind, ...] = get_args(ScopeKind)
ALGORITHM = "HS256"
MAX_TTL_S = 365 * 86_400
# 9999-12-31T23:59:59Z: the last `exp` a datetime or a float of seconds holds. Was: a signed `exp` of 10**309 passed,
# and the stream it opened crashed at its first wait (int too large to convert to float).
MAX_EXP = 253_402_300_799
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash; PyJWT warns below it
MAX_TOKEN_LENGTH = 2048  # far above any real token (~200 chars): bounds the work an unauthenticated caller causes

# RFC 7515's compact form: three base64url segments without padding (PyJWT would also take padded ones).
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_TTL_RE = re.compile(r"(\d{1,12})\s*([smhd]?)", re.IGNORECASE)
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
# PyJWT checks the signature, the algorithm and that `exp` is present. `exp` is compared here, with the caller's
# clock (`now`), so tests can drive it; `iat` is informational (a backend whose clock runs a second ahead must not
# be refused); `sub` is parsed by _scope; `nbf`, which we never set, is left to PyJWT and the real clock.
_DECODE_OPTIONS: Options = {"require": ["exp"], "verify_exp": False, "verify_iat": False, "verify_sub": False}


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

    @property
    def subject(self) -> str:
        """The JWT `sub` claim: `session:<id>`, `ticket:<id>` or `admin` (ids never hold a colon)."""
        return self.kind if self.id is None else f"{self.kind}:{self.id}"

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


@dataclass(frozen=True, slots=True)
class Grant:
    """A verified token: its scope, and the second it stops being valid (`exp`, whole epoch seconds)."""

    scope: Scope
    expires_at: int


def check_secret(name: str, secret: str) -> str:
    """The secret, unless it is a placeholder from the deployment files or too short to resist guessing: the
    gateway's rule at start-up, and the CLI's before it mints (was: `token` minted with a secret no gateway takes)."""
    if is_placeholder(secret):  # Settings.from_env refuses it too; this covers Settings built in code
        raise ConfigError(f"{name} is a placeholder (it contains CHANGE-ME): set it to 32+ random bytes")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{name} is {len(secret.encode())} bytes: it must be at least {MIN_SECRET_BYTES} "
            "(e.g. `openssl rand -base64 48`)"
        )
    return secret


def expiry(now: float, ttl_s: float) -> int:
    """The `exp` (epoch seconds) of a token minted at `now`: rounded up, so a TTL never comes out shorter."""
    return math.ceil(now + ttl_s)


def mint_token(secret: str, scope: Scope, ttl_s: float, *, now: float | None = None) -> str:
    """A signed JWT for `scope`, valid for `ttl_s` seconds (at most MAX_TTL_S) from `now`."""
    key = _key(secret)
    if not (math.isfinite(ttl_s) and 0 < ttl_s <= MAX_TTL_S):
        raise InvalidInput(f"invalid token TTL {ttl_s!r} s: expected more than 0 and at most {MAX_TTL_S} s (365 d)")
    issued = time.time() if now is None else now
    claims = {"sub": scope.subject, "exp": expiry(issued, ttl_s), "iat": int(issued)}
    with _any_key_length():
        return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_token(secret: str, token: str, *, now: float | None = None) -> Scope:
    """The scope of a genuine, unexpired token; Unauthorized otherwise, saying why (never showing the token)."""
    return verify_grant(secret, token, now=now).scope


def verify_grant(secret: str, token: str, *, now: float | None = None, previous: str | None = None) -> Grant:
    """The scope and expiry of a genuine, unexpired token; Unauthorized otherwise, saying why.

    The claims are decoded only once the signature holds, so nothing an attacker writes there reaches the
    JSON parser unless it was signed with our secret (the header is parsed first: it names the algorithm).
    `previous` is the secret being rotated out: a token signed with it still holds until it expires.
    """
    keys = [_key(secret)] + ([_key(previous)] if previous else [])
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("malformed token")
    if _TOKEN_RE.fullmatch(token) is None:
        raise Unauthorized("malformed token: expected a JWT, <header>.<claims>.<signature> in unpadded base64url")
    claims = _decode(token, keys)
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise Unauthorized("malformed token payload: no expiry (exp must be whole epoch seconds)")
    if exp > MAX_EXP:
        raise Unauthorized("malformed token payload: exp is past the year 9999 (whole epoch seconds expected)")
    if (time.time() if now is None else now) >= exp:
        raise Unauthorized("token expired")
    return Grant(_scope(claims.get("sub")), exp)


def _decode(token: str, keys: list[bytes]) -> dict[str, object]:
    """The claims of a token signed with one of `keys` (tried in order)."""
    try:
        with _any_key_length():
            for key in keys[:-1]:
                try:
                    return dict(jwt.decode(token, key, algorithms=[ALGORITHM], options=_DECODE_OPTIONS))
                except jwt.InvalidSignatureError:
                    continue
            return dict(jwt.decode(token, keys[-1], algorithms=[ALGORITHM], options=_DECODE_OPTIONS))
    except jwt.InvalidSignatureError:
        raise Unauthorized("invalid token signature") from None
    except jwt.InvalidAlgorithmError:
        raise Unauthorized(f"token algorithm not allowed: only {ALGORITHM}") from None
    except jwt.MissingRequiredClaimError:
        raise Unauthorized("malformed token payload: no expiry (exp)") from None
    except jwt.InvalidTokenError as exc:  # PyJWT's messages never quote the token
        # Includes a signature spelt with its spare low bits set: PyJWT accepts only the one canonical spelling.
        raise Unauthorized(f"malformed token: {str(exc)[:200]}") from None


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


def _scope(subject: object) -> Scope:
    if not isinstance(subject, str):
        raise Unauthorized("token has an unknown scope kind: sub must be session:<id>, ticket:<id> or admin")
    kind, colon, scope_id = subject.partition(":")
    if kind not in SCOPE_KINDS:
        raise Unauthorized(f"token has an unknown scope kind {kind[:20]!r}")
    try:
        return Scope(kind, scope_id if colon else None)
    except InvalidInput as exc:
        raise Unauthorized(f"token has an invalid scope: {exc.message}") from None


def _key(secret: str) -> bytes:
    if not secret:
        raise ConfigError("GATEWAY_AUTH_SECRET is empty: tokens cannot be signed or checked without it")
    return secret.encode()


@contextmanager
def _any_key_length() -> Iterator[None]:
    """PyJWT warns on every call with an HMAC key under 32 bytes; GATEWAY_AUTH_SECRET has never had a minimum
    (the README asks for 32+ random bytes), and the warning would otherwise land on `token`'s stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        yield
