"""What every tracker of a replica shares: the stores, OpenCode, the replica's boards and the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from poller.archive import Archive
from poller.events import EventRouter
from poller.job_board import JobBoard
from poller.metrics import Metrics
from poller.request_board import RequestBoard
from poller.status_board import StatusBoard
from shared.config import DEFAULT_SERVER
from shared.opencode.client import OpenCodeClient
from shared.store.lua import Scripts


def never_handed_back(server: str, session_id: str) -> bool:
    """One replica alone (and the tests' deps): no other replica to give a server another URL."""
    return False


@dataclass(frozen=True, slots=True)
class TrackerDeps:
    """Built once by the worker; the boards are refreshed by its replica tick, the trackers only read them."""

    redis: Redis
    scripts: Scripts
    opencode: OpenCodeClient
    archive: Archive
    board: StatusBoard
    jobs: JobBoard
    poll_interval_s: float
    retry_deadline_s: float
    metrics: Metrics
    router: EventRouter | None = None  # None: OPENCODE_EVENTS=off, polling alone
    poll_interval_events_s: float = 2.0  # while the event stream is healthy
    event_coalesce_s: float = 0.05
    orphaned_run_grace_s: float = 30.0  # idle with the newest assistant message open this long: the run is lost
    requests: RequestBoard | None = None  # GET /permission and /question, once per replica tick
    pending_timeout_s: float | None = None  # a request nobody answered this long is rejected; None: wait forever
    server: str = DEFAULT_SERVER  # the OpenCode server of this place: the `server` label of its metrics
    # whether a 404 for a session on a server hands it back (poller/server_urls.py): another live replica gives the
    # server another URL, so the 404 only says this replica's URL lacks it (until OPENCODE_RETRY_DEADLINE_MS)
    hands_back: Callable[[str, str], bool] = never_handed_back
