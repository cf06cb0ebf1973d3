"""A stream whose token expires while it owes its client a fresh snapshot: it ends, sending nothing more."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from gateway import stream
from gateway.fanout import LOST, Published, Signal
from gateway.metrics import Metrics
from gateway.session_reads import SessionRead
from shared.ids import SessionId

pytestmark = pytest.mark.anyio
SID = SessionId("ses_" + "E" * 26)


class ExpiringSubscription:
    """Reports lost events (a fresh snapshot is owed), and the token expires in that same instant."""

    channel = "opencode:updates:" + SID

    def __init__(self, lifetime: stream.Lifetime) -> None:
        self._lifetime = lifetime

    async def get(self, timeout_s: float) -> Published | Signal | None:
        self._lifetime.expires_at = int(time.time()) - 1
        return LOST


def state() -> Any:
    return SimpleNamespace(
        metrics=Metrics(), fanout=SimpleNamespace(confirmed=lambda channel: True), ping_interval_s=60.0
    )


async def read_session(state: Any, sid: str) -> SessionRead:
    return SessionRead({"sessionId": sid, "seq": 9, "live": True, "status": "running", "secret": "after exp"})


async def live_sessions(redis: Any, session_type: str | None = None) -> list[dict[str, Any]]:
    return [{"sessionId": SID, "secret": "after exp"}]


async def frames_of(frames: Any) -> list[bytes]:
    return [frame async for frame in frames]


def names(frames: list[bytes]) -> list[str]:
    return [line[7:].decode() for frame in frames for line in frame.split(b"\n") if line.startswith(b"event: ")]


async def test_a_session_stream_owed_a_snapshot_sends_none_once_its_token_expired(monkeypatch):
    """Was: the owed snapshot was read and sent first (the session's whole content, after `exp`), then
    `token-expired`."""
    monkeypatch.setattr(stream, "read_session", read_session)
    lifetime = stream.Lifetime(int(time.time()) + 60, ping_interval_s=60)
    sub: Any = ExpiringSubscription(lifetime)
    frames = await frames_of(stream._follow(state(), SID, sub, lifetime, seq=1))
    assert names(frames) == ["token-expired"], frames


async def test_the_live_list_owed_a_snapshot_sends_none_once_its_token_expired(monkeypatch):
    """Was: the same for the live list: a fresh list of every live session after `exp`."""
    monkeypatch.setattr(stream, "live_sessions", live_sessions)
    lifetime = stream.Lifetime(int(time.time()) + 60, ping_interval_s=60)
    sub: Any = ExpiringSubscription(lifetime)
    frames = await frames_of(stream._live_events(SimpleNamespace(**vars(state()), redis=None), sub, lifetime, [], None))
    assert names(frames) == ["snapshot", "token-expired"], frames
    assert b"after exp" not in b"".join(frames)
