"""The poller's Prometheus metrics, served on POLLER_METRICS_PORT when it is set."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    start_http_server,
)

SERVER = ["server"]  # the OpenCode server a session runs on (OPENCODE_SERVERS name; `default`)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
PAUSE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


def _registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=_registry)

    def __post_init__(self) -> None:
        r = self.registry
        # the process's CPU and memory, and the collector's collections and what they freed, by generation
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        self.sessions_held = Gauge("poller_sessions_held", "Sessions this replica holds a lease on", registry=r)
        self.sessions_starting = Gauge(
            "poller_sessions_starting",
            "Sessions claimed whose tracker has not yet had its first tick (a takeover's catch-up)",
            registry=r,
        )
        self.polls = Counter("poller_polls", "Message-list polls sent to OpenCode", SERVER, registry=r)
        self.polls_unchanged = Counter(
            "poller_polls_unchanged",
            "Tail polls whose body was byte for byte the last one: neither decoded nor compared",
            SERVER,
            registry=r,
        )
        self.polls_settled = Counter(
            "poller_polls_settled",
            "Whole-list polls whose older messages were byte for byte the ones held: only the newest were decoded",
            SERVER,
            registry=r,
        )
        self.poll_failures = Counter("poller_poll_failures", "Polls that failed and were retried", SERVER, registry=r)
        self.state_writes = Counter(
            "poller_state_writes", "Fenced state writes (one seq each)", [*SERVER, "path"], registry=r
        )
        self.poll_corrections = Counter(
            "poller_poll_corrections", "Polls that changed the state the event stream had built", SERVER, registry=r
        )
        self.lease_lost = Counter(
            "poller_leases_lost", "Sessions given up because their lease was lost", SERVER, registry=r
        )
        self.archived = Counter(
            "poller_sessions_archived", "Sessions archived, by final status", [*SERVER, "status"], registry=r
        )
        self.archive_retries = Counter("poller_archive_retries", "Archive attempts that failed", SERVER, registry=r)
        self.server_sessions = Gauge(
            "poller_server_sessions", "Sessions this replica holds, by OpenCode server", ["server"], registry=r
        )
        self.tick_lag = Histogram(
            "poller_tick_lag_seconds", "How late a session's poll tick fires", buckets=LAG_BUCKETS, registry=r
        )

        self.gc_pause = Histogram(
            "poller_gc_pause_seconds",
            "How long each garbage collection stopped the replica (every session it holds waits), by generation",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=r,
        )

    @contextmanager
    def collector_pauses(self) -> Iterator[None]:
        """Time every collection of the process while inside.

        A collection stops the whole event loop: at thousands of sessions, one young collection walks every
        object made since the last and can take longer than the freshness goal. Operators see it here, beside
        the tick lag it causes; the capacity benchmark reads it to tell a collection's stall from a slow tick.
        """
        children = [self.gc_pause.labels(str(generation)) for generation in range(3)]
        started = 0.0

        def on_collection(phase: str, info: dict[str, Any]) -> None:
            nonlocal started
            if phase == "start":
                started = time.perf_counter()
            else:
                children[info["generation"]].observe(time.perf_counter() - started)

        gc.callbacks.append(on_collection)
        try:
            yield
        finally:
            gc.callbacks.remove(on_collection)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        start_http_server(port, addr=host, registry=self.registry)
