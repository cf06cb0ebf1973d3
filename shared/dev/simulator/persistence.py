"""The simulator's sessions in a file across restarts, as a real OpenCode keeps them in its storage.

`dev --data-dir` passes `--state-file`: the sessions are written when the server stops (after its shutdown
aborted every run, as OpenCode's does) and read back when it starts, so a session that was running when dev
stopped is found again, its messages intact, instead of vanishing with the simulator's memory.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import uvicorn

from shared.dev.simulator.app import SimulatorApp
from shared.dev.simulator.engine import SimMessage, SimSession, Simulation
from shared.dev.simulator.server import SimulatorServer


def save_sessions(simulation: Simulation, path: Path) -> None:
    sessions = [
        {
            "info": sess.info,
            "generatedTitle": sess.generated_title,
            "snapshot": sess.snapshot,
            "messages": [{"info": sess.messages[i].info, "parts": sess.messages[i].parts} for i in sess.order],
        }
        for sess in simulation.sessions.values()
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"sessions": sessions}), encoding="utf-8")
    os.replace(tmp, path)


def load_sessions(simulation: Simulation, path: Path) -> int:
    """Read the sessions back (none when the file is missing); returns how many."""
    if not path.is_file():
        return 0
    data = json.loads(path.read_text(encoding="utf-8"))
    for item in data["sessions"]:
        sess = SimSession(info=item["info"], generated_title=item["generatedTitle"], snapshot=item["snapshot"])
        for message in item["messages"]:
            sess.add(SimMessage(message["info"], message["parts"]))
        simulation.sessions[sess.id] = sess
    return len(data["sessions"])


class PersistentServer(SimulatorServer):
    """The simulator's server, its sessions read from `state_file` before it starts and written at shutdown.

    Written inside shutdown, after the runs were aborted: uvicorn re-raises the stopping signal once run()
    returns, so nothing after run() gets to execute.
    """

    def __init__(self, config: uvicorn.Config, *, state_file: Path, port_file: str | None = None) -> None:
        super().__init__(config, port_file=port_file)
        self.state_file = state_file
        app = config.app
        assert isinstance(app, SimulatorApp)
        self.simulation = app.simulation
        load_sessions(self.simulation, state_file)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets=sockets)
        save_sessions(self.simulation, self.state_file)
