"""The one exception tree every edge (HTTP handlers, CLI) maps to a status or exit code.

SessionLayerError              what the edges catch
├── InvalidInput               bad id, bad JSON metadata, bad query          (HTTP 400, exit 2)
│   └── ConfigError            names the variable and the bad value          (exit 2)
├── NotFound                   unknown session or ticket                     (HTTP 404, exit 1)
├── Conflict                   the session cannot do that in its state       (HTTP 409, exit 1)
├── Unauthorized               missing, malformed or expired token           (HTTP 401)
├── Forbidden                  token valid, but for another scope            (HTTP 403)
├── Unavailable                Redis, PostgreSQL or OpenCode unreachable     (HTTP 503, exit 1)
├── OpenCodeError              OpenCode answered, but wrongly                (HTTP 502, exit 1)
└── LeaseLost                  a fenced write was refused (poller-internal; never reaches an edge)
"""

from __future__ import annotations


class SessionLayerError(Exception):
    """Base of every error this project raises on purpose; catching it covers them all."""

    def __init__(self, message: str, detail: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidInput(SessionLayerError):
    """The caller's input is wrong: fixing the input, not retrying, is the cure."""


class ConfigError(InvalidInput):
    """An environment variable is missing or malformed; the message names it."""


class NotFound(SessionLayerError):
    """No live or archived session (or ticket) with that id."""


class Conflict(SessionLayerError):
    """The session exists but its state does not allow the operation."""


class Unauthorized(SessionLayerError):
    """No token, or one that is malformed, forged or expired."""


class Forbidden(SessionLayerError):
    """A valid token whose scope does not cover the resource."""


class Unavailable(SessionLayerError):
    """A dependency (Redis, PostgreSQL, OpenCode) could not be reached or timed out; retrying may help."""


class Unreached(Unavailable):
    """A request that never reached its server (the connection could not be made): nothing of it was done, so it
    may be sent again at once. Any other Unavailable may have been carried out (see poller/prompts.py)."""


class OpenCodeError(SessionLayerError):
    """OpenCode answered with an error status or a body we cannot read."""

    def __init__(self, message: str, detail: object | None = None, *, status_code: int | None = None) -> None:
        super().__init__(message, detail)
        self.status_code = status_code

    @property
    def retryable(self) -> bool:
        """5xx and unreadable bodies may pass; a 4xx will not."""
        return self.status_code is None or self.status_code >= 500


class LeaseLost(SessionLayerError):
    """A fenced write was refused: another poller owns the session now, so this one must stop touching it."""


class RedisWentBack(LeaseLost):
    """Redis holds the session behind what its owner wrote or read (restarted from its append-only file or a
    snapshot, failed over to a replica that lagged): the owner stops, and the session is rebuilt (poller/rewound.py)."""
