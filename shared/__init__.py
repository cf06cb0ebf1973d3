"""The Python API other backends call: enqueue, send, cancel, reply, answer, read a session; Settings and the
errors."""

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
    "answer",
    "cancel",
    "enqueue",
    "get_session",
    "reply",
    "send",
]
