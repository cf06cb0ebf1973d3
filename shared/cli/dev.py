"""`opencode-sessions dev`: the whole system on this machine, for trying it out and for local development."""

from __future__ import annotations

import os
from pathlib import Path

import click

from shared.cli.terminal import echo
from shared.config import LOG_LEVELS
from shared.errors import InvalidInput, NotFound


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),  # a str: an empty one must not become Path(".")
    metavar="DIR",
    help="Keep Redis and PostgreSQL data here, across restarts (default: temporary, removed on exit).",
)
@click.option("--demo", is_flag=True, help="Queue sample sessions (text, tool call, failing) under ticket `demo`.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Gateway port (0: any free one). Default 8080, or a free port when 8080 is taken.",
)
@click.option("--replicas", default=2, show_default=True, type=click.IntRange(1, 16), help="Poller replicas to run.")
@click.option(
    "--opencode-url",
    envvar="OPENCODE_URL",
    show_envvar=True,
    metavar="URL",
    help="An OpenCode server to use; without it the project's OpenCode simulator is started. From the"
    " environment (OPENCODE_URL) only when something answers there and it is not a running dev's own simulator.",
)
@click.option(
    "--sim-speed",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.1, 1000),
    help="Speed of the simulator (divides its scripted delays).",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(LOG_LEVELS),
    help="Log level of the pollers and the gateway (their lines are shown prefixed on stderr).",
)
@click.option(
    "--auth",
    is_flag=True,
    help="Gateway with tokens on, its secret generated (kept in --data-dir) and exported; on anyway when"
    " GATEWAY_AUTH_SECRET is set.",
)
@click.option(
    "--env",
    "print_env",
    is_flag=True,
    help="Print the export lines of the dev that runs now (on --data-dir, else the newest) and exit:"
    ' eval "$(opencode-sessions dev --env)".',
)
@click.option(
    "--servers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 4),
    help="Simulated OpenCode servers to run (2+: OPENCODE_SERVERS names them default, sim2, …).",
)
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines (ready, up, exited, demo, stopped).")
def dev(
    data_dir: str | None,
    demo: bool,
    port: int | None,
    replicas: int,
    opencode_url: str | None,
    sim_speed: float,
    log_level: str,
    auth: bool,
    print_env: bool,
    servers: int,
    as_json: bool,
) -> None:
    """Run everything locally until Ctrl-C: Redis, PostgreSQL, pollers, the gateway and an OpenCode.

    Redis and PostgreSQL are real servers this command starts itself (no Docker), migrated, with random passwords;
    the gateway logs in as the read-only Redis user and PostgreSQL role of deploy/, everything listens on
    127.0.0.1 only. The OpenCode is --opencode-url, or an exported OPENCODE_URL that answers and is not another
    dev's simulator, else the built-in simulator. Once all is up, stdout gets `export KEY=VALUE` lines
    (GATEWAY_URL, REDIS_URL, DATABASE_URL, OPENCODE_URL, GATEWAY_AUTH_SECRET) for another terminal, also written
    to a file (named on stderr; DIR/dev.env with --data-dir) and printed again by `dev --env`; with --json: one
    `ready` event. With --data-dir the ports and credentials stay the same across restarts, and a second dev on
    the same directory is refused. Status lines and the components' logs go to stderr. A component that dies is
    restarted with a backoff. Ctrl-C or SIGTERM stops everything and removes the temporary data (exit 0).
    Without --auth or GATEWAY_AUTH_SECRET the gateway runs with GATEWAY_AUTH=off.

    Exit 1 when something cannot start (a taken --port, a data dir in use, a server that fails), 2 for bad
    options.
    """
    # Imported here: the supervisor and the embedded servers are development tooling, loaded only when `dev` runs.
    from shared.dev.supervisor import preflight
    from shared.dev.supervisor.options import DevOptions
    from shared.dev.supervisor.stack import DevStack

    data = data_dir_path(data_dir)
    if print_env:
        echo(running_env(data), nl=False)
        return
    # Everything a child would refuse is exit 2 now, before a server starts (preflight).
    from_env = (
        click.get_current_context().get_parameter_source("opencode_url") == click.core.ParameterSource.ENVIRONMENT
    )
    url = None
    if opencode_url is not None and opencode_url.strip():
        url = preflight.check_opencode_url(opencode_url, from_env=from_env)
    preflight.check_children_env(os.environ, opencode_url=url, log_level=log_level)
    secret = preflight.check_secrets(os.environ)
    if data is not None:
        preflight.check_data_dir(data)
    options = DevOptions(
        data_dir=data,
        gateway_port=port,
        replicas=replicas,
        opencode_url=url,
        sim_speed=sim_speed,
        log_level=log_level,
        demo=demo,
        as_json=as_json,
        auth_secret=auth or secret is not None,
        secret=secret,
        opencode_from_env=from_env,
        servers=servers,
    )
    DevStack(options).run()


def data_dir_path(raw: str | None) -> Path | None:
    """--data-dir as a path. Was: an empty one (`--data-dir "$UNSET_VAR"`) was the current directory, and dev
    wrote Redis's and PostgreSQL's data, its lock and its env file with the passwords into it."""
    if raw is not None and not raw.strip():
        raise InvalidInput("--data-dir is empty: give the directory to keep dev's data in, or leave the option out")
    return None if raw is None else Path(raw)


def running_env(data_dir: Path | None) -> str:
    """The env file of the dev running on `data_dir`, else of the newest running dev; NotFound when none runs."""
    from shared.dev.supervisor.rundir import DATA_DIR_ENV, DATA_DIR_LOCK, held, running_env_files

    if data_dir is not None:
        if not held(data_dir / DATA_DIR_LOCK) or not (data_dir / DATA_DIR_ENV).is_file():
            raise NotFound(f"no `opencode-sessions dev` is running on --data-dir {data_dir}")
        return (data_dir / DATA_DIR_ENV).read_text(encoding="utf-8")
    found = running_env_files()
    if not found:
        raise NotFound("no `opencode-sessions dev` is running (start one first, in another terminal)")
    if len(found) > 1:
        echo(f"note: {len(found)} devs are running: the newest one's variables ({found[0]})", err=True)
    return found[0].read_text(encoding="utf-8")
