"""Serving the simulator with uvicorn: as a process (see __main__), or in a daemon thread of a test."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import uvicorn
from starlette.types import ASGIApp

from shared.dev.simulator.app import SimulatorApp


class SimulatorServer(uvicorn.Server):
    """uvicorn's Server, but at shutdown it first stops the runs and ends the `/event` streams: uvicorn
    waits for open responses before the app's lifespan ends, and an event stream never ends by itself."""

    def __init__(self, config: uvicorn.Config, *, port_file: str | None = None) -> None:
        super().__init__(config)
        self.port_file = port_file

    @property
    def port(self) -> int:
        return int(self.servers[0].sockets[0].getsockname()[1])

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.port_file and self.started:
            await anyio.Path(self.port_file + ".tmp").write_text(str(self.port))
            os.replace(self.port_file + ".tmp", self.port_file)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if isinstance(self.config.app, SimulatorApp):
            self.config.app.simulation.close()
        await super().shutdown(sockets=sockets)


@contextmanager
def serve_in_thread(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` (a simulator, or any ASGI app) with uvicorn in a daemon thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning", timeout_graceful_shutdown=5)
    server = SimulatorServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="opencode-simulator", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the OpenCode simulator did not start")
            time.sleep(0.005)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
