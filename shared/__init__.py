"""The Python API other backends call: enqueue, send, cancel, read a session; Settings and the errors."""

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

__all__ = [
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
    "cancel",
    "enqueue",
    "get_session",
    "send",
]
