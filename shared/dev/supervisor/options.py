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
    auth_secret: bool = False  # GATEWAY_AUTH_SECRET is set: the gateway checks tokens
    servers: int = 1  # simulators to run (2+: named default, sim2, … in OPENCODE_SERVERS)
