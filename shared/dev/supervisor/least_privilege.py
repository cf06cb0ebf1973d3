"""The production least-privilege set-up, applied to dev's own servers: deploy/'s Redis users and read-only role.

dev gives the gateway the `opencode-gateway` Redis user (read and subscribe only) and the `opencode_gateway`
PostgreSQL role (SELECT only), the pollers and the second terminal's CLI the `opencode-poller` user; the Redis
`default` user and the PostgreSQL superuser get random passwords too. The rules come from the very files an
operator applies (deploy/redis-acl.conf, deploy/postgres-readonly.sql), so dev exercises what production runs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from shared.dev.supervisor.options import DevError

GATEWAY_USER, POLLER_USER = "opencode-gateway", "opencode-poller"
GATEWAY_ROLE = "opencode_gateway"
SECRET_BYTES = 32  # the gateway's HS256 key: 32 random bytes, as the README asks of a production secret


def deploy_file(name: str) -> Path:
    """A file of the checkout's deploy/ (dev runs from a clone, as the README starts it)."""
    candidate = Path(__file__).resolve().parents[3] / "deploy" / name
    if not candidate.is_file():
        raise DevError(f"cannot find deploy/{name} next to the package: run dev from a clone of the repository")
    return candidate


@dataclass(frozen=True, slots=True)
class Credentials:
    """Every password and key one dev uses; kept in the data dir (0600) so that a restart keeps its URLs."""

    redis_admin: str
    redis_poller: str
    redis_gateway: str
    postgres_admin: str
    postgres_gateway: str
    gateway_secret: str

    @classmethod
    def generate(cls) -> Credentials:
        return cls(
            redis_admin=secrets.token_hex(16),
            redis_poller=secrets.token_hex(16),
            redis_gateway=secrets.token_hex(16),
            postgres_admin=secrets.token_hex(16),
            postgres_gateway=secrets.token_hex(16),
            gateway_secret=secrets.token_urlsafe(SECRET_BYTES),
        )

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Credentials:
        return cls(**{name: data[name] for name in cls.__slots__})

    def to_json(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in self.__slots__}


def redis_acl_users(credentials: Credentials) -> list[str]:
    """deploy/redis-acl.conf's `user` lines, each CHANGE-ME password replaced by this dev's."""
    passwords = {GATEWAY_USER: credentials.redis_gateway, POLLER_USER: credentials.redis_poller}
    lines = []
    for line in deploy_file("redis-acl.conf").read_text(encoding="utf-8").splitlines():
        if line.startswith("user "):
            name = line.split()[1]
            lines.append(" ".join(f">{passwords[name]}" if r.startswith(">CHANGE-ME") else r for r in line.split()))
    if sorted(line.split()[1] for line in lines) != sorted(passwords):
        raise DevError("deploy/redis-acl.conf does not define exactly the opencode-gateway and opencode-poller users")
    return lines


def apply_gateway_role(admin_url: str, password: str) -> None:
    """Run deploy/postgres-readonly.sql (idempotent) with this dev's password for the role."""
    script = deploy_file("postgres-readonly.sql").read_text(encoding="utf-8")
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("SET opencode.gateway_password = {}").format(sql.Literal(password)))
        conn.execute(script.encode())
