"""shared.tokens: signed gateway tokens round-trip, and anything expired, forged or malformed is Unauthorized."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
import time

import jwt
import pytest

from shared.errors import ConfigError, InvalidInput, Unauthorized
from shared.tokens import MAX_TTL_S, Scope, mint_token, parse_ttl, verify_token

SECRET = "test-secret-0123456789-0123456789"  # 32+ bytes, as RFC 7518 asks of an HS256 key
SESSION = "ses_1a2b3c4d5e6fABCDEFGHIJklmn"
OTHER_SESSION = "ses_9f8e7d6c5b4aZYXWVUTSRQponm"
NOW = 1_800_000_000.0
HEADER = {"alg": "HS256", "typ": "JWT"}
B64_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"

SCOPES = [Scope("session", SESSION), Scope("ticket", "TICKET-42"), Scope("ticket", "a.b_c-d"), Scope("admin")]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signed(body: object, secret: str = SECRET, raw: bytes | None = None, header: object = HEADER) -> str:
    """A JWT with any header and claims we like, correctly HMAC-SHA256 signed: checks what verify does after it."""
    head = b64(json.dumps(header).encode())
    payload = b64(raw if raw is not None else json.dumps(body).encode())
    signature = hmac.new(secret.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{b64(signature)}"


@pytest.mark.parametrize("scope", SCOPES, ids=lambda s: f"{s.kind}-{s.id}")
def test_round_trip(scope: Scope) -> None:
    token = mint_token(SECRET, scope, 3600, now=NOW)
    assert verify_token(SECRET, token, now=NOW) == scope
    assert verify_token(SECRET, token, now=NOW + 3599) == scope


def test_token_format() -> None:
    """A standard JWT: the README's claims, HS256 over `header.claims`, base64url without padding."""
    token = mint_token(SECRET, Scope("ticket", "T-1"), 90, now=NOW)
    header, payload, signature = token.split(".")
    assert "=" not in token
    assert json.loads(unb64(header)) == HEADER
    assert json.loads(unb64(payload)) == {"sub": "ticket:T-1", "exp": int(NOW) + 90, "iat": int(NOW)}
    expected = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert signature == b64(expected)


@pytest.mark.parametrize(
    ("scope", "subject"),
    [
        (Scope("session", SESSION), f"session:{SESSION}"),
        (Scope("ticket", "T-1"), "ticket:T-1"),
        (Scope("admin"), "admin"),
    ],
)
def test_subject(scope: Scope, subject: str) -> None:
    claims = jwt.decode(mint_token(SECRET, scope, 60), SECRET, algorithms=["HS256"])
    assert claims["sub"] == scope.subject == subject


def test_fractional_ttl_rounds_up() -> None:
    token = mint_token(SECRET, Scope("admin"), 0.5, now=NOW + 0.7)
    assert verify_token(SECRET, token, now=NOW + 1.1) == Scope("admin")
    with pytest.raises(Unauthorized):
        verify_token(SECRET, token, now=NOW + 2)


def test_real_clock() -> None:
    assert verify_token(SECRET, mint_token(SECRET, Scope("admin"), 60)) == Scope("admin")


@pytest.mark.parametrize("after", [3600, 3601, 10**9])
def test_expired(after: float) -> None:
    token = mint_token(SECRET, Scope("session", SESSION), 3600, now=NOW)
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(SECRET, token, now=NOW + after)


def test_other_secret() -> None:
    token = mint_token(SECRET, Scope("admin"), 3600, now=NOW)
    with pytest.raises(Unauthorized, match="signature"):
        verify_token(SECRET + "x", token, now=NOW)


def test_tampered_payload() -> None:
    token = mint_token(SECRET, Scope("session", SESSION), 3600, now=NOW)
    header, _, signature = token.split(".")
    forged = b64(json.dumps({"sub": "admin", "exp": int(NOW) + 3600, "iat": int(NOW)}).encode())
    with pytest.raises(Unauthorized, match="signature"):
        verify_token(SECRET, f"{header}.{forged}.{signature}", now=NOW)
    # Swapping the scope's session for another one is just as forged.
    other = mint_token(SECRET, Scope("session", OTHER_SESSION), 3600, now=NOW)
    with pytest.raises(Unauthorized):
        verify_token(SECRET, f"{header}.{other.split('.')[1]}.{signature}", now=NOW)


def test_tampered_expiry() -> None:
    token = mint_token(SECRET, Scope("admin"), 60, now=NOW)
    header, payload, signature = token.split(".")
    body = json.loads(unb64(payload))
    body["exp"] += 10**6
    with pytest.raises(Unauthorized, match="signature"):
        verify_token(SECRET, f"{header}.{b64(json.dumps(body).encode())}.{signature}", now=NOW + 120)


@pytest.mark.parametrize("position", [0, 10, -1, -2])
def test_tampered_signature(position: int) -> None:
    token = mint_token(SECRET, Scope("ticket", "T-1"), 3600, now=NOW)
    head, _, signature = token.rpartition(".")
    chars = list(signature)
    chars[position] = "A" if chars[position] != "A" else "B"
    with pytest.raises(Unauthorized):
        verify_token(SECRET, f"{head}.{''.join(chars)}", now=NOW)


def test_signature_with_padding_or_junk_is_rejected() -> None:
    """base64 decoders skip junk: the signature must be exactly ours, character for character."""
    token = mint_token(SECRET, Scope("admin"), 3600, now=NOW)
    head, _, signature = token.rpartition(".")
    # 43 characters carry 258 bits for 256: setting an unused low bit of the last one spells the same bytes.
    spare_bits = signature[:-1] + B64_ALPHABET[B64_ALPHABET.index(signature[-1]) + 1]
    assert unb64(spare_bits) == unb64(signature)
    variants = (token + "=", token + "A", token + "\n", " " + token, token + ".", "." + token, f"{head}.{spare_bits}")
    for variant in variants:
        with pytest.raises(Unauthorized):
            verify_token(SECRET, variant, now=NOW)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "v1",
        "v1.",
        "v1..",
        "v1.abc",
        "v1.abc.def.ghi",
        "Bearer v1.abc.def",
        "v1.a+b/c.def",
        "v1.éé.ff",
        "v1." + "A" * 5000 + ".sig",
        "a.b.c",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "eyJhbGciOiJIUzI1NiJ9..c2ln",
        "\x00",
        "x" * 100_000,
    ],
    ids=lambda t: repr(t[:20]),
)
def test_malformed(token: str) -> None:
    with pytest.raises(Unauthorized):
        verify_token(SECRET, token, now=NOW)


@pytest.mark.parametrize(
    ("body", "raw", "reason"),
    [
        (None, b"not json", "payload"),
        (None, b"\xff\xfe", "payload"),
        ([1, 2], None, "payload"),
        ("admin", None, "payload"),
        ({"sub": "admin"}, None, "expiry"),
        ({"sub": "admin", "exp": "9999999999"}, None, "expiry"),
        ({"sub": "admin", "exp": True}, None, "expiry"),
        ({"sub": "admin", "exp": 2e9}, None, "expiry"),
        ({"sub": "admin", "exp": None}, None, "expiry"),
        ({"sub": "root", "exp": 2_000_000_000}, None, "unknown scope kind"),
        ({"sub": None, "exp": 2_000_000_000}, None, "unknown scope kind"),
        ({"exp": 2_000_000_000}, None, "unknown scope kind"),
        ({"sub": SESSION, "exp": 2_000_000_000}, None, "unknown scope kind"),
        ({"sub": 12345, "exp": 2_000_000_000}, None, "unknown scope kind"),
        ({"sub": ["admin"], "exp": 2_000_000_000}, None, "unknown scope kind"),
        ({"sub": "session:ses_short", "exp": 2_000_000_000}, None, "invalid scope"),
        ({"sub": "session", "exp": 2_000_000_000}, None, "invalid scope"),
        ({"sub": "session:", "exp": 2_000_000_000}, None, "invalid scope"),
        ({"sub": "ticket:a:b", "exp": 2_000_000_000}, None, "invalid scope"),
        ({"sub": "ticket:*", "exp": 2_000_000_000}, None, "invalid scope"),
        ({"sub": "admin:everything", "exp": 2_000_000_000}, None, "invalid scope"),
        ({"sub": "admin:", "exp": 2_000_000_000}, None, "invalid scope"),
    ],
)
def test_signed_but_invalid_payload(body: object, raw: bytes | None, reason: str) -> None:
    """Even with a valid signature (a leaked secret, a bug elsewhere), only well-formed scopes come out."""
    with pytest.raises(Unauthorized, match=reason):
        verify_token(SECRET, signed(body, raw=raw), now=NOW)


def test_signed_payload_is_accepted_when_well_formed() -> None:
    token = signed({"sub": "ticket:T-9", "exp": 2_000_000_000, "iat": 0})
    assert verify_token(SECRET, token, now=NOW) == Scope("ticket", "T-9")


@pytest.mark.parametrize(
    ("subject", "scope"),
    [
        (f"session:{SESSION}", Scope("session", SESSION)),
        ("ticket:T-1", Scope("ticket", "T-1")),
        ("admin", Scope("admin")),
    ],
)
def test_a_token_minted_by_another_backend_is_accepted(subject: str, scope: Scope) -> None:
    """Another backend knows only the README: HS256, `sub`, `exp` (and `iat`), signed with the shared secret."""
    token = jwt.encode({"sub": subject, "exp": int(NOW) + 300, "iat": int(NOW)}, SECRET, algorithm="HS256")
    assert verify_token(SECRET, token, now=NOW) == scope
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(SECRET, token, now=NOW + 300)


def test_other_libraries_extra_header_fields_and_claims_are_accepted() -> None:
    token = jwt.encode(
        {"sub": "ticket:T-1", "exp": int(NOW) + 60, "jti": "abc", "iss": "billing"},
        SECRET,
        algorithm="HS256",
        headers={"kid": "2026-12"},
    )
    assert verify_token(SECRET, token, now=NOW) == Scope("ticket", "T-1")


def test_an_audience_is_refused_and_not_before_is_honoured() -> None:
    """As the README says: `aud` (meant for another service) is a 401, and so is a token before its `nbf`."""
    exp = int(time.time()) + 3600
    for claims in ({"aud": "billing"}, {"nbf": exp - 60}):
        token = jwt.encode({"sub": "admin", "exp": exp, **claims}, SECRET, algorithm="HS256")
        with pytest.raises(Unauthorized):
            verify_token(SECRET, token)
    started = jwt.encode({"sub": "admin", "exp": exp, "nbf": exp - 7200}, SECRET, algorithm="HS256")
    assert verify_token(SECRET, started) == Scope("admin")


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_another_algorithm_is_unauthorized(algorithm: str) -> None:
    token = jwt.encode(
        {"sub": "admin", "exp": int(NOW) + 60}, SECRET + "-long-enough-for-hs512" * 3, algorithm=algorithm
    )
    with pytest.raises(Unauthorized, match="algorithm"):
        verify_token(SECRET, token, now=NOW)


@pytest.mark.parametrize("header", [{"alg": "none"}, {"alg": "None"}, {"typ": "JWT"}, {"alg": "RS256"}, {"alg": None}])
def test_alg_none_or_missing_is_unauthorized(header: dict[str, object]) -> None:
    """Unsigned (`alg: none`, with or without a signature segment) or unnamed algorithms never pass."""
    claims = {"sub": "admin", "exp": int(NOW) + 60}
    head, payload = b64(json.dumps(header).encode()), b64(json.dumps(claims).encode())
    for token in (f"{head}.{payload}.", signed(claims, header=header)):
        with pytest.raises(Unauthorized):
            verify_token(SECRET, token, now=NOW)
    with pytest.raises(Unauthorized, match="algorithm"):
        verify_token(SECRET, signed(claims, header=header), now=NOW)


def test_pyjwt_unsigned_token_is_unauthorized() -> None:
    token = jwt.encode({"sub": "admin", "exp": int(NOW) + 60}, None, algorithm="none")
    with pytest.raises(Unauthorized, match="malformed"):
        verify_token(SECRET, token, now=NOW)


def test_a_token_without_exp_is_unauthorized() -> None:
    token = jwt.encode({"sub": "admin", "iat": int(NOW)}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="expiry"):
        verify_token(SECRET, token, now=NOW)


def test_a_token_signed_with_another_secret_is_unauthorized() -> None:
    token = jwt.encode({"sub": "admin", "exp": int(NOW) + 60}, "another-secret-of-32-bytes-or-more", algorithm="HS256")
    with pytest.raises(Unauthorized, match="signature"):
        verify_token(SECRET, token, now=NOW)


def test_a_short_secret_still_works_and_warns_nobody() -> None:
    """GATEWAY_AUTH_SECRET has no minimum length; PyJWT's warning about it must not escape (pytest: an error)."""
    token = mint_token("short", Scope("admin"), 60, now=NOW)
    assert verify_token("short", token, now=NOW) == Scope("admin")


def test_empty_secret() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_AUTH_SECRET"):
        mint_token("", Scope("admin"), 60)
    with pytest.raises(ConfigError, match="GATEWAY_AUTH_SECRET"):
        verify_token("", mint_token(SECRET, Scope("admin"), 60))


@pytest.mark.parametrize("ttl", [0, -1, MAX_TTL_S + 1, float("inf"), float("nan")])
def test_mint_rejects_bad_ttl(ttl: float) -> None:
    with pytest.raises(InvalidInput, match="TTL"):
        mint_token(SECRET, Scope("admin"), ttl, now=NOW)


@pytest.mark.parametrize(
    ("kind", "scope_id"),
    [
        ("session", None),
        ("session", "not-a-session"),
        ("session", "ses_1a2b3c4d5e6fABCDEFGHIJklmn:x"),
        ("ticket", None),
        ("ticket", ""),
        ("ticket", "has space"),
        ("ticket", "x" * 129),
        ("admin", "something"),
        ("root", None),
    ],
)
def test_scope_validates_ids(kind: str, scope_id: str | None) -> None:
    with pytest.raises(InvalidInput):
        Scope(kind, scope_id)  # type: ignore[arg-type]  # deliberately wrong kinds too


def test_allows_session() -> None:
    admin, session, ticket = Scope("admin"), Scope("session", SESSION), Scope("ticket", "T-1")
    assert admin.allows_session(SESSION, None)
    assert admin.allows_session(OTHER_SESSION, "T-2")
    assert session.allows_session(SESSION, None)
    assert session.allows_session(SESSION, "T-1")
    assert not session.allows_session(OTHER_SESSION, None)
    assert ticket.allows_session(SESSION, "T-1")
    assert ticket.allows_session(OTHER_SESSION, "T-1")
    assert not ticket.allows_session(SESSION, "T-2")
    assert not ticket.allows_session(SESSION, None)
    assert not ticket.allows_session("T-1", None)  # a ticket id is not a session id


def test_allows_ticket() -> None:
    assert Scope("admin").allows_ticket("T-1")
    assert Scope("ticket", "T-1").allows_ticket("T-1")
    assert not Scope("ticket", "T-1").allows_ticket("T-2")
    assert not Scope("ticket", "T-1").allows_ticket("t-1")
    assert not Scope("session", SESSION).allows_ticket("T-1")
    assert not Scope("session", SESSION).allows_ticket(SESSION)


def test_is_admin() -> None:
    assert Scope("admin").is_admin
    assert not Scope("ticket", "T-1").is_admin
    assert not Scope("session", SESSION).is_admin


def test_scope_is_frozen_and_hashable() -> None:
    scope = Scope("ticket", "T-1")
    with pytest.raises(AttributeError):
        scope.id = "T-2"  # type: ignore[misc]
    assert {scope, Scope("ticket", "T-1")} == {scope}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("7d", 7 * 86400),
        ("365d", 365 * 86400),
        ("1H", 3600),
        (" 2h ", 7200),
        ("31536000", 31_536_000),
    ],
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", " ", "0", "0s", "0d", "-5m", "+5m", "1.5h", "1w", "h", "1 hour", "1h30m", "366d", "31536001", "9" * 40, "1e3"],
)
def test_parse_ttl_rejects(text: str) -> None:
    with pytest.raises(InvalidInput, match="TTL"):
        parse_ttl(text)
