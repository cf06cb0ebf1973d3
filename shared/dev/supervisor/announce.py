"""What `dev` says once everything is up: the variables to export, what to try next, and the demo sessions."""

from __future__ import annotations

import shlex

import anyio

from shared.dev.demo import enqueue_demo
from shared.dev.supervisor.options import DevOptions
from shared.dev.supervisor.reporter import Reporter
from shared.errors import SessionLayerError


def announce(reporter: Reporter, options: DevOptions, env: dict[str, str], pids: dict[str, int | None]) -> None:
    """KEY=VALUE lines on stdout (with --json: one `ready` event), then the next steps on stderr."""
    if options.as_json:
        reporter.event(
            "ready",
            env=env,
            pids=pids,
            dataDir=None if options.data_dir is None else str(options.data_dir.absolute()),
            auth=options.auth_secret,
        )
    else:
        for name, value in env.items():
            reporter.out(f"{name}={shlex.quote(value)}")
    say = reporter.status
    printed = "the `ready` event's env" if options.as_json else "the four KEY=VALUE lines printed on stdout"
    say(f"ready. In another terminal, export {printed}, then:")
    if options.auth_secret:
        say("  export GATEWAY_TOKEN=$(opencode-sessions token --admin)")
    say('  opencode-sessions enqueue --type ask --ticket T-1 --prompt "TOOL run a command"')
    say("  opencode-sessions watch <the ses_… id it printed>")
    say("  opencode-sessions status;  opencode-sessions history --ticket T-1")
    kept = f"data is kept in {options.data_dir}" if options.data_dir else "temporary data is removed"
    say(f"Ctrl-C stops everything ({kept}).")


def queue_demo(reporter: Reporter, env: dict[str, str]) -> None:
    """Queue the demo sessions and say how to watch them; a failure is a warning, the stack keeps running."""
    try:
        queued = anyio.run(enqueue_demo, env["REDIS_URL"], env["DATABASE_URL"], env["OPENCODE_URL"])
    except SessionLayerError as exc:
        reporter.status(f"warning: the demo sessions could not be queued: {exc.message}")
        return
    reporter.event("demo", sessions=queued)
    reporter.status("demo sessions queued (ticket demo):")
    for item in queued:
        reporter.status(f"  {item['title']:<22} opencode-sessions watch {item['sessionId']}")
