"""The Python API other backends call: enqueue, send, cancel, reply, answer, read a session; Settings and the
errors.

The names load on first use (PEP 562), so a process that imports one of `shared`'s modules (the CLI minting a
token, the gateway) does not pay for the API's Redis and PostgreSQL clients it never calls.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `X as X`: an explicit re-export, for type checkers (`__all__` below is built)
    from shared.answers import answer as answer
    from shared.answers import reply as reply
    from shared.commands import cancel as cancel
    from shared.commands import enqueue as enqueue
    from shared.commands import send as send
    from shared.config import Settings as Settings
    from shared.errors import ConfigError as ConfigError
    from shared.errors import Conflict as Conflict
    from shared.errors import Forbidden as Forbidden
    from shared.errors import InvalidInput as InvalidInput
    from shared.errors import LeaseLost as LeaseLost
    from shared.errors import NotFound as NotFound
    from shared.errors import OpenCodeError as OpenCodeError
    from shared.errors import SessionLayerError as SessionLayerError
    from shared.errors import Unauthorized as Unauthorized
    from shared.errors import Unavailable as Unavailable
    from shared.sessions import get_session as get_session

_HOMES = {  # each name's module, imported when the name is first used
    "answer": "shared.answers",
    "reply": "shared.answers",
    "cancel": "shared.commands",
    "enqueue": "shared.commands",
    "send": "shared.commands",
    "Settings": "shared.config",
    "ConfigError": "shared.errors",
    "Conflict": "shared.errors",
    "Forbidden": "shared.errors",
    "InvalidInput": "shared.errors",
    "LeaseLost": "shared.errors",
    "NotFound": "shared.errors",
    "OpenCodeError": "shared.errors",
    "SessionLayerError": "shared.errors",
    "Unauthorized": "shared.errors",
    "Unavailable": "shared.errors",
    "get_session": "shared.sessions",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'shared' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
