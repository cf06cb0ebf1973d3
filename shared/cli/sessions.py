"""Commands on one session: enqueue, send, cancel, show."""

from __future__ import annotations

from typing import Any

import click

from shared import commands
from shared.cli.arguments import read_stdin, read_value
from shared.cli.pending import answered_lines
from shared.cli.render import session_lines
from shared.cli.runtime import clients, run
from shared.cli.terminal import echo, emit_json
from shared.cli.usage import usage_line
from shared.config import Settings
from shared.errors import InvalidInput
from shared.ids import parse_session_id, parse_ticket_id
from shared.models import SESSION_TYPES
from shared.opencode.servers import OpenCodeServers, parse_directory
from shared.run_options import parse_agent, parse_model, parse_permissions
from shared.sessions import get_session
from shared.store import requests
from shared.store.transactions import committed
from shared.usage import Usage


def _read_prompt(prompt: str | None, what: str) -> str | None:
    if prompt == "-":
        text = read_stdin(what)
        if not text.strip():
            raise InvalidInput("the prompt read from standard input is empty")
        return text
    return prompt


@click.command()
@click.option("--type", "session_type", required=True, type=click.Choice(SESSION_TYPES), help="Kind of session.")
@click.option("--ticket", "ticket_id", help="Ticket the session belongs to (becomes its active session).")
@click.option("--prompt", help="First prompt; '-' reads it from standard input.")
@click.option("--title", help="OpenCode session title.")
@click.option(
    "--metadata", help="JSON object stored with the session; '@FILE' reads it from a file, '-' from standard input."
)
@click.option("--server", metavar="NAME", help="The OpenCode server to run on (OPENCODE_SERVERS); default: the first.")
@click.option("--directory", metavar="PATH", help="Absolute directory the session runs in (OpenCode's ?directory=).")
@click.option("--agent", help="OpenCode agent to run the session with (e.g. build, plan).")
@click.option("--model", help="Model as PROVIDER/MODEL.")
@click.option(
    "--permission",
    "permissions",
    multiple=True,
    metavar="PERMISSION[:PATTERN]=allow|ask|deny",
    help="A permission rule for this session (repeatable; the last matching rule wins), e.g. bash=ask.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the pending state as JSON instead of the id.")
def enqueue(
    session_type: str,
    ticket_id: str | None,
    prompt: str | None,
    title: str | None,
    metadata: str | None,
    server: str | None,
    directory: str | None,
    agent: str | None,
    model: str | None,
    permissions: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create an OpenCode session and queue it for the pollers; prints its id at once."""
    # Bad input is exit 2 whatever the state of the servers: check it before connecting to any.
    if prompt == "-" and metadata == "-":
        raise InvalidInput("--prompt and --metadata cannot both read standard input: give one of them another way")
    text = _read_prompt(prompt, "--prompt")
    if text is not None:
        commands.parse_prompt(text)
    if ticket_id is not None:
        parse_ticket_id(ticket_id)
    if title is not None:
        commands.parse_title(title)
    meta = commands.parse_metadata(read_value(metadata, "--metadata")) if metadata is not None else None
    parse_directory(directory)
    if server is not None:
        OpenCodeServers(Settings.from_env().servers).config(server)  # exit 2 naming an unknown one
    placed = server is not None or directory is not None
    if agent is not None:
        parse_agent(agent)
    if model is not None:
        parse_model(model)
    parse_permissions(permissions)

    async def go() -> dict[str, object]:
        async with clients(opencode=True) as c:
            assert c.opencode is not None and c.servers is not None
            return await commands.enqueue(
                c.redis,
                c.db,
                c.servers if placed else c.opencode,  # without either: exactly the one client, as always
                server=server,
                directory=directory,
                session_type=session_type,
                ticket_id=ticket_id,
                prompt=text,
                title=title,
                metadata=meta,
                agent=agent,
                model=model,
                permission=permissions,
            )

    state = run(go)
    if as_json:
        emit_json(state)
    else:
        echo(str(state["sessionId"]))


@click.command()
@click.argument("session_id")
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="Print the queued prompt as JSON.")
def send(session_id: str, text: str, as_json: bool) -> None:
    """Queue a follow-up prompt (TEXT, or '-' for standard input); an archived session comes back to life."""
    parse_session_id(session_id)
    body = commands.parse_prompt(_read_prompt(text, "TEXT") or "")

    async def go() -> str:
        async with clients() as c:
            return await commands.send(c.redis, c.db, session_id, body)

    message_id = run(go)
    if as_json:
        emit_json({"sessionId": session_id, "messageID": message_id})
    else:
        echo(message_id)


@click.command()
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def cancel(session_id: str, as_json: bool) -> None:
    """Abort a session in OpenCode (or drop it before it starts); its final status is `cancelled`."""
    parse_session_id(session_id)

    async def go() -> str:
        async with clients() as c:
            return await commands.cancel(c.redis, c.db, session_id)

    result = run(go)
    if as_json:
        emit_json({"sessionId": session_id, "cancel": result})
    else:
        echo(f"cancel {result}: {session_id}")


@click.command()
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole session object as JSON.")
def show(session_id: str, as_json: bool) -> None:
    """Show a session: live state if it runs, else its archived row."""
    parse_session_id(session_id)

    async def go() -> dict[str, Any]:
        async with clients() as c:
            found = await get_session(c.redis, c.db, session_id)
            if found.get("live") is False:  # archived: every request it waited on, with its answer
                async with committed(c.db, reads_only=True):
                    found["requests"] = [row.to_json() for row in await requests.of_session(c.db, session_id)]
            return found

    session = run(go)
    if as_json:
        emit_json(session)
        return
    for line in session_lines(session):
        echo(line)
    for line in answered_lines(session.get("requests") or []):
        echo(line)
    if Usage.from_json(session.get("usage")).steps:  # a session not yet run used nothing: no line
        echo(usage_line(session.get("usage")))
