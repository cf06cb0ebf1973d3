"""`opencode-sessions token`: mint a gateway token offline, with GATEWAY_AUTH_SECRET and nothing else."""

from __future__ import annotations

import time

import click

from shared.cli.terminal import echo, emit_json
from shared.config import Settings
from shared.errors import ConfigError
from shared.tokens import Scope, check_secret, expiry, mint_token, parse_ttl


@click.command()
@click.option("--session", "session_id", metavar="ID", help="Token for one session (ses_…).")
@click.option("--ticket", "ticket_id", metavar="ID", help="Token for every session of one ticket.")
@click.option("--admin", is_flag=True, help="Token for every session and ticket.")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: 90, 90s, 15m, 1h, 7d (at most 365d).")
@click.option("--json", "as_json", is_flag=True, help="Print {token, scope, id, expiresAt (epoch ms)} as JSON.")
def token(session_id: str | None, ticket_id: str | None, admin: bool, ttl: str, as_json: bool) -> None:
    """Mint a signed gateway token for exactly one of --session, --ticket or --admin; prints the token."""
    given = {"--session": session_id is not None, "--ticket": ticket_id is not None, "--admin": admin}
    chosen = [flag for flag, present in given.items() if present]
    if len(chosen) != 1:
        got = f"got {' and '.join(chosen)}" if chosen else "got none"
        raise click.UsageError(f"give exactly one of --session ID, --ticket ID or --admin ({got})")
    # Bad input is exit 2 before the configuration is even read.
    ttl_s = parse_ttl(ttl)
    if session_id is not None:
        scope = Scope("session", session_id)
    elif ticket_id is not None:
        scope = Scope("ticket", ticket_id)
    else:
        scope = Scope("admin")
    secret = Settings.from_env(with_store_clients=False).gateway_auth_secret  # offline: redis-py and psycopg unloaded
    if secret is None:
        raise ConfigError("GATEWAY_AUTH_SECRET is not set: tokens are signed with it")
    now = time.time()
    minted = mint_token(check_secret("GATEWAY_AUTH_SECRET", str(secret)), scope, ttl_s, now=now)
    if as_json:
        emit_json({"token": minted, "scope": scope.kind, "id": scope.id, "expiresAt": expiry(now, ttl_s) * 1000})
    else:
        echo(minted)
