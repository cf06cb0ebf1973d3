"""`opencode-sessions token` as a user runs it: a real process, the secret only in its environment.

Needs no server: a token is minted from GATEWAY_AUTH_SECRET alone. Contract as for every command: stdout is the
token (or JSON), errors are one `error: …` line on stderr with exit 2 for bad usage or input, never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from shared.errors import Unauthorized
from shared.tokens import Scope, verify_token

COMMAND = [sys.executable, "-c", "from shared.cli import main; main()", "token"]
SECRET = "cli-test-secret-0123456789-0123456789"  # 32+ bytes, as the gateway takes
SESSION = "ses_1a2b3c4d5e6fABCDEFGHIJklmn"


def token_cli(*args: str, secret: str | None = SECRET) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_AUTH_SECRET"}
    if secret is not None:
        env["GATEWAY_AUTH_SECRET"] = secret
    result = subprocess.run([*COMMAND, *args], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def assert_usage_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "scope"),
    [
        (["--session", SESSION], Scope("session", SESSION)),
        (["--ticket", "TICKET-42"], Scope("ticket", "TICKET-42")),
        (["--admin"], Scope("admin")),
    ],
    ids=["session", "ticket", "admin"],
)
def test_mints_a_verifiable_token(args: list[str], scope: Scope) -> None:
    result = token_cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    token = result.stdout.strip()
    assert result.stdout == token + "\n"  # the token alone: `$(opencode-sessions token …)` just works
    assert verify_token(SECRET, token) == scope
    # Default TTL is one hour.
    assert verify_token(SECRET, token, now=time.time() + 3500) == scope
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(SECRET, token, now=time.time() + 3700)


def test_ttl() -> None:
    result = token_cli("--admin", "--ttl", "15m")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert verify_token(SECRET, token, now=time.time() + 800) == Scope("admin")
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(SECRET, token, now=time.time() + 1000)


def test_token_from_another_secret_does_not_verify() -> None:
    result = token_cli("--admin", secret="some-other-secret-0123456789-0123456789")
    assert result.returncode == 0, result.stderr
    with pytest.raises(Unauthorized, match="signature"):
        verify_token(SECRET, result.stdout.strip())


def test_json() -> None:
    before = time.time()
    result = token_cli("--ticket", "T-1", "--ttl", "2h", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert set(body) == {"token", "scope", "id", "expiresAt"}
    assert body["scope"] == "ticket"
    assert body["id"] == "T-1"
    assert verify_token(SECRET, body["token"]) == Scope("ticket", "T-1")
    assert (before + 7200) * 1000 <= body["expiresAt"] <= (time.time() + 7201) * 1000


def test_json_admin_has_null_id() -> None:
    result = token_cli("--admin", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["scope"] == "admin"
    assert body["id"] is None


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--ttl", "1h"],
        ["--admin", "--session", SESSION],
        ["--session", SESSION, "--ticket", "T-1"],
        ["--admin", "--ticket", "T-1", "--session", SESSION],
    ],
    ids=["none", "ttl-only", "admin+session", "session+ticket", "all-three"],
)
def test_exactly_one_scope(args: list[str]) -> None:
    assert_usage_error(token_cli(*args), "exactly one")


@pytest.mark.parametrize("ttl", ["0", "-5m", "1w", "abc", "366d", ""])
def test_bad_ttl(ttl: str) -> None:
    assert_usage_error(token_cli("--admin", "--ttl", ttl), "TTL")


@pytest.mark.parametrize("session_id", ["not-a-session", "ses_short", "", "ses_1a2b3c4d5e6fABCDEFGHIJklmn:x"])
def test_invalid_session_id(session_id: str) -> None:
    assert_usage_error(token_cli("--session", session_id), "session id")


@pytest.mark.parametrize("ticket_id", ["a:b", "has space", "*", "x" * 129])
def test_invalid_ticket_id(ticket_id: str) -> None:
    assert_usage_error(token_cli("--ticket", ticket_id), "ticket id")


@pytest.mark.parametrize("secret", [None, "", "   "])
def test_no_secret(secret: str | None) -> None:
    assert_usage_error(token_cli("--admin", secret=secret), "GATEWAY_AUTH_SECRET")


def test_a_secret_the_gateway_refuses_mints_nothing() -> None:
    """Was: a 17-byte secret minted a token that no gateway takes (it refuses to start with that secret)."""
    result = token_cli("--admin", secret="seventeen-bytes-x")
    assert_usage_error(result, "GATEWAY_AUTH_SECRET is 17 bytes: it must be at least 32")


def test_bad_input_is_reported_before_the_missing_secret() -> None:
    assert_usage_error(token_cli("--session", "nope", secret=None), "session id")


def test_unknown_option() -> None:
    assert_usage_error(token_cli("--admin", "--forever"), "--forever")


def test_help() -> None:
    result = token_cli("--help", secret=None)
    assert result.returncode == 0
    for word in ("--session", "--ticket", "--admin", "--ttl", "--json"):
        assert word in result.stdout
