"""What `opencode-sessions dev` was asked for, and the error it fails with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.errors import SessionLayerError


class DevError(SessionLayerError):
    """The stack could not start (port taken, a component failed); exit 1 after everything was stopped."""


@dataclass(frozen=True, slots=True)
class DevOptions:
    data_dir: Path | None = None
    gateway_port: int | None = None  # None: 8080, or a free port when 8080 is taken; 0: a free port
    replicas: int = 2
    opencode_url: str | None = None  # None: run the simulator
    sim_speed: float = 1.0
    log_level: str = "warning"
    demo: bool = False
    as_json: bool = False
    auth_secret: bool = False  # the gateway checks tokens (--auth, or GATEWAY_AUTH_SECRET is set)
    secret: str | None = None  # GATEWAY_AUTH_SECRET when set; else dev generates one (kept in --data-dir)
    opencode_from_env: bool = False  # opencode_url came from an exported OPENCODE_URL, not --opencode-url
    servers: int = 1  # simulators to run (2+: named default, sim2, … in OPENCODE_SERVERS)
