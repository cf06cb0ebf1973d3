"""What `dev` says once everything is up: the variables to export, what to try next, and the demo sessions."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import anyio

from shared.dev.demo import enqueue_demo
from shared.dev.supervisor.envfile import export_lines
from shared.dev.supervisor.options import DevOptions
from shared.dev.supervisor.reporter import Reporter
from shared.errors import SessionLayerError


def activate_hint() -> str:
    """How another terminal gets `opencode-sessions` on its PATH: this venv's activate script, if we run in one."""
    if sys.prefix == sys.base_prefix:
        return ""
    script = Path(sys.prefix) / "bin" / "activate"
    with_path = script
    if script.is_relative_to(Path.cwd()):
        with_path = script.relative_to(Path.cwd())
    return f"source {shlex.quote(str(with_path))}"


def announce(
    reporter: Reporter, options: DevOptions, env: dict[str, str], pids: dict[str, int | None], env_file: str
) -> None:
    """`export KEY=VALUE` lines on stdout (with --json: one `ready` event), then the next steps on stderr."""
    if options.as_json:
        reporter.event(
            "ready",
            env=env,
            pids=pids,
            dataDir=None if options.data_dir is None else str(options.data_dir.absolute()),
            auth=options.auth_secret,
            envFile=env_file,
        )
    else:
        for line in export_lines(env):
            reporter.out(line)
    say = reporter.status
    say(f"ready. The variables to export are also in {env_file}. In another terminal:")
    hint = activate_hint()
    if hint:
        say(f"  {hint:<44} # the venv is not active there: this puts opencode-sessions on PATH")
    data_dir = f" --data-dir {shlex.quote(str(options.data_dir))}" if options.data_dir else ""
    eval_line = f'eval "$(opencode-sessions dev --env{data_dir})"'
    say(f"  {eval_line:<44} # or: source {shlex.quote(env_file)}")
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
