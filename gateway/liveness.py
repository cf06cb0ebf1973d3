"""Liveness: whether this process still does its whole job, for /healthz and for the server's exit code.

A task meant to run as long as the app (the fan-out) that ends while the app serves would leave the process
answering half-dead: every stream a 503, nothing restarting it. Instead the process is marked failed: /healthz
turns 503 and the server exits non-zero, so Kubernetes and the `dev` supervisor both restart it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class Liveness:
    def __init__(self) -> None:
        self.failure: str | None = None
        self.stopping = False

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            log.error("gateway_failed", reason=reason)

    async def supervise(self, name: str, task: Callable[[], Awaitable[None]]) -> None:
        """Run `task`; its end, by an error or by returning, fails the process unless the app is stopping."""
        try:
            await task()
        except Exception:
            log.exception("background_task_crashed", task=name)
            self.fail(f"{name} crashed")
            return
        if not self.stopping:
            self.fail(f"{name} ended")
