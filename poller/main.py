"""`opencode-poller`: read the settings, then run one replica until SIGTERM or Ctrl-C."""

from __future__ import annotations

import gc
import signal
import sys

import anyio
import structlog

from poller.metrics import Metrics
from poller.worker import Worker
from shared.config import Settings
from shared.errors import ConfigError
from shared.logs import configure_logging
from shared.opencode.servers import OpenCodeServers
from shared.store.connections import pg_pool, redis_client

log = structlog.get_logger(__name__)

# The collector walks only what is new: a young collection per 100,000 net allocations, and older generations never.
# A replica's objects are nearly all its sessions' state, alive as long as the session and freed by reference count
# when it ends (the tests named `..._leave_nothing_for_the_collector`): nothing for a collection to find. A middle
# collection walks again everything that survived the young ones since the last: at 8,000 sessions of 30 messages,
# ~4 million objects, and it stopped every session for 1.5 s (three minutes after start-up, then every 50 young
# collections) to free 68. The old generation was already never reached (1,000 middle collections). So a reference
# cycle that becomes garbage after surviving a young collection stays; `python_gc_objects_collected_total` shows
# what young collections still find. Smaller young thresholds were measured and not kept (README, Benchmarks).
NEVER = 2**31 - 1
GC_THRESHOLDS = (100_000, NEVER, NEVER)


async def serve(settings: Settings, metrics: Metrics | None = None) -> None:
    """Run one replica; `metrics` already serving POLLER_METRICS_PORT (main binds it before anything starts)."""
    metrics = metrics or Metrics()
    redis = redis_client(settings.redis_url, max_connections=max(20, settings.max_sessions_per_poller // 10))
    servers = OpenCodeServers(
        settings.servers,
        timeout_s=settings.opencode_timeout_s,
        max_connections=max(10, settings.max_sessions_per_poller),
        default_directory=settings.opencode_directory,
        max_body_bytes=settings.opencode_max_response_bytes,
    )
    try:
        async with (
            pg_pool(settings.database_url, min_size=1, max_size=10) as pool,
            anyio.create_task_group() as tg,
        ):
            worker = Worker(settings, redis, pool, servers.client(None, None), metrics, servers=servers)
            tg.start_soon(_stop_on_signal, tg.cancel_scope)
            with metrics.collector_pauses():
                await worker.run()
            tg.cancel_scope.cancel()
    finally:
        await servers.aclose()
        await redis.aclose()


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("poller_stopping", signal=signal.Signals(signum).name)
            scope.cancel()
            return


def _has_uvloop() -> bool:
    """uvloop roughly halves the event loop's cost per request (P2 in the README)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    try:
        settings = Settings.from_env()
        metrics = _serve_metrics(settings.poller_metrics_port)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings)
    gc.set_threshold(*GC_THRESHOLDS)
    anyio.run(serve, settings, metrics, backend_options={"use_uvloop": _has_uvloop()})


def _serve_metrics(port: int | None) -> Metrics:
    """Bind POLLER_METRICS_PORT before anything starts. Was: a port in use (another process, another replica on
    the host) was a traceback from inside the running replica, naming no variable."""
    metrics = Metrics()
    if port is not None:
        try:
            metrics.serve(port)
        except OSError as exc:
            reason = f"cannot listen on it: {exc.strerror}"
            raise ConfigError(f"POLLER_METRICS_PORT={str(port)!r} is invalid: {reason}") from exc
    return metrics


if __name__ == "__main__":
    main()
