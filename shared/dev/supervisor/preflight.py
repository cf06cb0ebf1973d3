"""What `dev` checks before it starts anything: a bad option or variable is exit 2 at once, not a child's later.

The children parse their environment with Settings.from_env and the gateway refuses a short or placeholder secret
(shared.tokens.check_secret); `dev` runs the same parsers on the environment it is about to hand them, with stand-in
store URLs (its own, not known yet, are always valid), so what would make a child exit 2 makes `dev` exit 2.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from shared.config import Settings
from shared.dev.processes import LOOPBACK
from shared.dev.supervisor.inherited import inherited
from shared.errors import ConfigError, InvalidInput

STAND_IN = {
    "REDIS_URL": f"redis://{LOOPBACK}:6379/0",
    "DATABASE_URL": f"postgresql://{LOOPBACK}:5432/opencode",
    "GATEWAY_HOST": LOOPBACK,
    "GATEWAY_PORT": "8080",
    "POLLER_ID": "dev-poller-1",
    "LOG_FORMAT": "console",
}


def check_opencode_url(raw: str, *, from_env: bool) -> str:
    """The URL the pollers will be given, parsed as they parse it; else InvalidInput naming where it came from."""
    try:
        Settings.from_env({"OPENCODE_URL": raw})
    except ConfigError as exc:  # its message shows the value with any password masked
        message = exc.message if from_env else "--opencode-url " + exc.message.removeprefix("OPENCODE_URL=")
        raise InvalidInput(message) from None
    return raw.strip().rstrip("/")


def check_children_env(environ: Mapping[str, str], *, opencode_url: str | None, log_level: str) -> None:
    """Parse what the pollers and the gateway will read (ConfigError naming the first bad variable)."""
    env = {**inherited(environ), **STAND_IN, "LOG_LEVEL": log_level}
    if opencode_url is not None:  # an external OpenCode: an exported OPENCODE_SERVERS may go with it
        env["OPENCODE_URL"] = opencode_url
        if environ.get("OPENCODE_SERVERS"):
            env["OPENCODE_SERVERS"] = environ["OPENCODE_SERVERS"]
    Settings.from_env(env)


def check_secrets(environ: Mapping[str, str]) -> str | None:
    """GATEWAY_AUTH_SECRET (and a previous one being rotated out) as the gateway checks them; the secret or None."""
    from shared.tokens import check_secret  # the gateway's own rule: a placeholder or a short secret is refused

    secret = (environ.get("GATEWAY_AUTH_SECRET") or "").strip()
    if not secret:
        return None
    check_secret("GATEWAY_AUTH_SECRET", secret)
    previous = (environ.get("GATEWAY_AUTH_SECRET_PREVIOUS") or "").strip()
    if previous:
        check_secret("GATEWAY_AUTH_SECRET_PREVIOUS", previous)
    return secret


def check_data_dir(path: Path) -> None:
    """Create it and write in it now: a path that cannot hold the data is one line naming it, not a traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".dev-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InvalidInput(f"--data-dir {path} cannot hold dev's data: {reason}") from None
