"""Which of the caller's variables `dev` hands on to its children, and which it always decides itself.

A terminal that ran `eval "$(opencode-sessions dev --env)"` keeps that dev's values after it stopped: its
OPENCODE_SERVERS names simulators that are gone, its REDIS_URL a Redis that is gone. So nothing `dev` sets for its
children is inherited: each is `dev`'s own value or absent. OPENCODE_URL and OPENCODE_SERVERS from the environment
are considered on purpose (opencode_choice), and GATEWAY_AUTH_SECRET turns tokens on (the `dev` command reads it).
"""

from __future__ import annotations

from collections.abc import Mapping

DECIDED = frozenset(
    {
        "REDIS_URL",
        "DATABASE_URL",
        "OPENCODE_URL",
        "OPENCODE_SERVERS",
        "GATEWAY_URL",
        "GATEWAY_HOST",
        "GATEWAY_PORT",
        "GATEWAY_AUTH",
        "GATEWAY_AUTH_SECRET",
        "POLLER_ID",
        "LOG_FORMAT",
        "LOG_LEVEL",
        "PYTHONUNBUFFERED",
    }
)


def inherited(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without what `dev` decides for its children (they get dev's value, or none)."""
    return {name: value for name, value in environ.items() if name not in DECIDED}
