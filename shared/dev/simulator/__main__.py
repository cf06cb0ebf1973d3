"""`python -m shared.dev.simulator --host 127.0.0.1 --port 4096 [--speed 2]`: the simulator as a process."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.persistence import PersistentServer
from shared.dev.simulator.server import SimulatorServer


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m shared.dev.simulator", description="An OpenCode server imitated for tests and `dev`."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4096, help="0 picks a free port (see --port-file)")
    parser.add_argument("--speed", type=float, default=1.0, help="divides every scripted delay")
    parser.add_argument("--directory", default=None, help="the sessions' directory (default: current)")
    parser.add_argument("--port-file", default=None, help="write the bound port here once listening")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--state-file", default=None, help="keep the sessions in this file across restarts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_simulator(args.speed, directory=args.directory)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, lifespan="on", log_config=None, timeout_graceful_shutdown=5
    )
    if args.state_file is None:
        SimulatorServer(config, port_file=args.port_file).run()
    else:
        PersistentServer(config, state_file=Path(args.state_file), port_file=args.port_file).run()


if __name__ == "__main__":
    main()
