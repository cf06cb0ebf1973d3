"""Streams per token: one token may hold at most GATEWAY_MAX_STREAMS_PER_TOKEN open streams in this process.

A leaked or shared token cannot open thousands of streams (each holds a file descriptor and a queue). Counted per
process: behind N gateway replicas a token may hold up to N times the limit, which still bounds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from shared.errors import SessionLayerError


class TooManyStreams(SessionLayerError):
    """The token already holds as many open streams as it may (HTTP 429)."""


class StreamSlots:
    def __init__(self, per_token: int) -> None:
        self._per_token = per_token
        self._held: dict[str, int] = {}

    def held(self, token: str) -> int:
        return self._held.get(token, 0)

    @contextmanager
    def hold(self, token: str | None) -> Iterator[None]:
        """One slot of `token` while the block runs; None (auth off) is not counted."""
        if token is None:
            yield
            return
        if self._held.get(token, 0) >= self._per_token:
            raise TooManyStreams(
                f"this token already holds {self._per_token} open streams (GATEWAY_MAX_STREAMS_PER_TOKEN)",
                {"limit": self._per_token},
            )
        self._held[token] = self._held.get(token, 0) + 1
        try:
            yield
        finally:
            left = self._held.pop(token) - 1
            if left:
                self._held[token] = left
