"""What a dev keeps in its --data-dir between runs, so a restart hands out the same URLs: ports and credentials.

`DIR/dev-state.json` (0600: it holds passwords). A run without --data-dir starts from a fresh state every time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from shared.dev.supervisor.least_privilege import Credentials
from shared.dev.supervisor.rundir import write_private

STATE_NAME = "dev-state.json"


@dataclass
class DevState:
    credentials: Credentials = field(default_factory=Credentials.generate)
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path | None) -> DevState:
        path = None if data_dir is None else data_dir / STATE_NAME
        if path is None or not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(Credentials.from_json(data["credentials"]), {k: int(v) for k, v in data["ports"].items()})
        except (ValueError, KeyError, TypeError):
            return cls()  # unreadable: new credentials (the servers were set up with the old ones only if kept)

    def save(self, data_dir: Path | None) -> None:
        if data_dir is not None:
            state = {"credentials": self.credentials.to_json(), "ports": self.ports}
            write_private(data_dir / STATE_NAME, json.dumps(state, indent=2) + "\n")
