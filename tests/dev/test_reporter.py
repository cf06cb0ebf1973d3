"""`dev`'s reporter: a child's output and status lines never drive the terminal; env lines and events are exact."""

from __future__ import annotations

import io
import json

from shared.dev.supervisor.reporter import Reporter


def test_child_output_and_status_lines_show_controls_as_escapes() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = Reporter(as_json=True, stdout=out, stderr=err)
    reporter.child_line("poller-1", "error=\x1b]0;pwned\x07 \u202eok")
    reporter.status("warning: the demo sessions could not be queued: \x1b[2J\x9b")
    reporter.out("export GATEWAY_URL=http://127.0.0.1:8080")
    reporter.event("demo", title="\x1b[8m\u202e")
    assert err.getvalue().splitlines() == [
        r"[poller-1] error=\x1b]0;pwned\x07 \u202eok",
        r"dev: warning: the demo sessions could not be queued: \x1b[2J\x9b",
    ]
    lines = out.getvalue().splitlines()
    assert lines[0] == "export GATEWAY_URL=http://127.0.0.1:8080"
    assert json.loads(lines[1]) == {"event": "demo", "title": "\x1b[8m\u202e"}
