"""The variables a running dev hands to other terminals: `export` lines on stdout, in a file, and `dev --env`.

The file is a shell script of `export KEY=VALUE` lines (values shell-quoted) after a comment header that names
the dev's pid and whether OPENCODE_URL is that dev's own simulator (which stops with it): a new dev reads it to
avoid reusing another dev's simulator from an exported OPENCODE_URL. A variable some dev exports but this one does
not (OPENCODE_SERVERS without --servers 2+) gets an `unset` line: an earlier dev's value must not linger.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

HEADER = '# opencode-sessions dev, pid {pid}: source this file, or eval "$(opencode-sessions dev --env)"'
SIMULATOR_MARK = "# OPENCODE_URL is this dev's own simulator: it stops with this dev"


EXPORTED = ("GATEWAY_URL", "REDIS_URL", "DATABASE_URL", "OPENCODE_URL", "GATEWAY_AUTH_SECRET", "OPENCODE_SERVERS")


def export_lines(env: dict[str, str]) -> list[str]:
    """`export` for each of `env`, then one `unset` for what another dev may have exported and this one does not."""
    unset = [name for name in EXPORTED if name not in env]
    exports = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    return exports + ([f"unset {' '.join(unset)}"] if unset else [])


def render(env: dict[str, str], *, pid: int, simulator: bool) -> str:
    lines = [HEADER.format(pid=pid), *([SIMULATOR_MARK] if simulator else []), *export_lines(env)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class EnvFile:
    env: dict[str, str]
    pid: int | None
    simulator: bool


def parse(text: str) -> EnvFile:
    env: dict[str, str] = {}
    pid: int | None = None
    for line in text.splitlines():
        if line.startswith("# opencode-sessions dev, pid "):
            pid = int(line.split("pid ", 1)[1].split(":", 1)[0])
        elif line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            words = shlex.split(value)
            env[name] = words[0] if words else ""
    return EnvFile(env, pid, SIMULATOR_MARK in text.splitlines())
