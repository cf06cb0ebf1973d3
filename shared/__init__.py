"""The Python API other backends call: enqueue, send, cancel, reply, answer, read a session; Settings and the
errors.

The names load on first use (PEP 562), so a process that imports one of `shared`'s modules (the CLI minting a
token, the gateway) does not pay for the API's Redis and PostgreSQL clients it never calls.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.answers import answer, reply
    from shared.commands import cancel, enqueue, send
    from shared.config import Settings
    from shared.errors import (
        ConfigError,
        Conflict,
        Forbidden,
        InvalidInput,
        LeaseLost,
        NotFound,
        OpenCodeError,
        SessionLayerError,
        Unauthorized,
        Unavailable,
    )
    from shared.sessions import get_session

_ERRORS = "shared.errors"
_HOMES = {
    "answer": "shared.answers",
    "reply": "shared.answers",
    "cancel": "shared.commands",
    "enqueue": "shared.commands",
    "send": "shared.commands",
    "Settings": "shared.config",
    "get_session": "shared.sessions",
    **dict.fromkeys(
        (
            "ConfigError",
            "Conflict",
            "Forbidden",
            "InvalidInput",
            "LeaseLost",
            "NotFound",
            "OpenCodeError",
            "SessionLayerError",
            "Unauthorized",
            "Unavailable",
        ),
        _ERRORS,
    ),
}

__all__ = [  # literal, for type checkers; the same names as _HOMES (tests/shared/test_api_exports.py)
    "ConfigError",
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "LeaseLost",
    "NotFound",
    "OpenCodeError",
    "SessionLayerError",
    "Settings",
    "Unauthorized",
    "Unavailable",
    "answer",
    "cancel",
    "enqueue",
    "get_session",
    "reply",
    "send",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'shared' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
