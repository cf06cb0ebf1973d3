"""`opencode-gateway`: read the settings, then serve the app with uvicorn until SIGTERM."""

from __future__ import annotations

import errno
import gc
import socket
import sys

import uvicorn
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.liveness import Liveness
from gateway.protocol import HeaderTimeoutProtocol
from gateway.state import GatewayState
from shared.config import Settings
from shared.errors import ConfigError
from shared.logs import configure_logging

GRACEFUL_SHUTDOWN_S = 5
GC_THRESHOLDS = (100_000, 50, 1_000)


class GatewayServer(uvicorn.Server):
    """uvicorn waits for open responses before it stops; SSE streams never end by themselves, so end them first.
    It also stops when the app failed (gateway/liveness.py): `failed` then tells the caller to exit non-zero."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app
        liveness = app.state.liveness
        assert isinstance(liveness, Liveness)
        self._liveness = liveness

    @property
    def failed(self) -> bool:
        return self._liveness.failure is not None

    async def on_tick(self, counter: int) -> bool:
        return self.failed or await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._liveness.stopping = True  # the fan-out ends now: that is no failure
        state = getattr(self._app.state, "gateway", None)
        if isinstance(state, GatewayState):
            state.fanout.close()
        await super().shutdown(sockets=sockets)


def check_auth(settings: Settings) -> None:
    """A secret turns tokens on whatever GATEWAY_AUTH says (gateway/app.py): with `off` too, `off` would be
    ignored. Was: GATEWAY_AUTH=off served with tokens, every request a 401, and the previous secret of a rotation
    was dropped without a word."""
    if settings.gateway_auth:
        return
    for name, secret in (
        ("GATEWAY_AUTH_SECRET", settings.gateway_auth_secret),
        ("GATEWAY_AUTH_SECRET_PREVIOUS", settings.gateway_auth_secret_previous),
    ):
        if secret:
            raise ConfigError(
                f"GATEWAY_AUTH='off' is invalid: {name} is set too, and a secret turns tokens on;"
                f" unset {name} to serve without tokens, or set GATEWAY_AUTH=on"
            )


def listen(host: str, port: int) -> socket.socket:
    """The gateway's socket, bound before anything starts (uvicorn serves on it). Was: a port in use, or a host
    that is not this machine's, was uvicorn's exit 3 after start-up, naming no variable."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        name, value = ("GATEWAY_PORT", str(port)) if exc.errno == errno.EADDRINUSE else ("GATEWAY_HOST", host)
        raise ConfigError(f"{name}={value!r} is invalid: cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


def main() -> None:
    try:
        settings = Settings.from_env()
        check_auth(settings)
        sock = listen(settings.gateway_host, settings.gateway_port)  # before the app logs that it starts
        configure_logging(settings)
        app = create_app(settings)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(2)
    config = uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        http=HeaderTimeoutProtocol.with_timeout(settings.gateway_header_timeout_s, settings.gateway_write_timeout_s),
        timeout_keep_alive=settings.gateway_keepalive_timeout_s,
        limit_concurrency=settings.gateway_max_connections,
        h11_max_incomplete_event_size=settings.gateway_max_header_bytes,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )
    # With 10,000 open streams a full garbage collection pauses every client: measured p99 fan-out 942 ms
    # with the default thresholds, 24 ms with these (tests/perf/fanout_bench.py).
    gc.set_threshold(*GC_THRESHOLDS)
    server = GatewayServer(config, app)
    server.run(sockets=[sock])
    if server.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
