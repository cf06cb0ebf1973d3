"""The gateway's Prometheus metrics, in a registry of its own so tests can build many apps."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


def _registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=_registry)

    def __post_init__(self) -> None:
        self.sse_clients = Gauge("gateway_sse_clients", "Open SSE streams", ["stream"], registry=self.registry)
        self.subscribed_sessions = Gauge(
            "gateway_subscribed_channels",
            "Redis channels the one pub/sub connection is subscribed to",
            registry=self.registry,
        )
        self.events_fanned_out = Counter(
            "gateway_events_fanned_out", "Events delivered to SSE client queues", registry=self.registry
        )
        self.resyncs = Counter(
            "gateway_stream_resyncs",
            "Fresh snapshots sent because a client lost events",
            ["reason"],
            registry=self.registry,
        )
        self.streams_ended = Counter(
            "gateway_streams_ended",
            "Streams the gateway ended early: token_expired, slow_client (past GATEWAY_STREAM_BUFFER_BYTES)",
            ["reason"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "gateway_request_seconds",
            "Time to answer a request (streams: until headers)",
            ["route", "status"],
            registry=self.registry,
        )
