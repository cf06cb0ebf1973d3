"""Commands that answer what a run waits on: `reply` to a permission request, `answer` a question."""

from __future__ import annotations

import click

from shared import answers
from shared.cli.runtime import clients, run
from shared.cli.terminal import echo, emit_json
from shared.ids import parse_session_id


def _done(result: dict[str, object], as_json: bool) -> None:
    if as_json:
        emit_json(result)
    else:
        echo(f"answered {result['requestId']} of {result['sessionId']}")


def _one_reply(**given: bool) -> str:
    """The one reply given. Was: `--reject --once` answered `once` (the flag given last won), silently allowing
    what the user also said to refuse."""
    chosen = [name for name, present in given.items() if present]
    if len(chosen) != 1:
        got = f" (got --{' and --'.join(chosen)})" if chosen else ""
        raise click.UsageError(f"give exactly one of --once, --always or --reject{got}")
    return chosen[0]


@click.command()
@click.argument("session_id")
@click.argument("request_id")
@click.option("--once", is_flag=True, help="Allow this one call.")
@click.option("--always", is_flag=True, help="Allow it, and calls like it, from now on.")
@click.option("--reject", is_flag=True, help="Refuse it (the tool call ends in error).")
@click.option("--message", help="With --reject: what to tell the model instead.")
@click.option("--by", help="Who answers (recorded with the answer).")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded answer as JSON.")
def reply(
    session_id: str,
    request_id: str,
    once: bool,
    always: bool,
    reject: bool,
    message: str | None,
    by: str | None,
    as_json: bool,
) -> None:
    """Answer a permission request (the live state's `pending`): --once, --always or --reject."""
    parse_session_id(session_id)
    answers.parse_request_id(request_id)
    answers.parse_by(by)
    answers.parse_message(message)  # exit 2 before any server is contacted, as every argument
    choice = _one_reply(once=once, always=always, reject=reject)
    if message is not None and choice != "reject":
        raise click.UsageError("--message goes with --reject")

    async def go() -> dict[str, object]:
        async with clients() as c:
            return await answers.reply(c.redis, c.db, session_id, request_id, choice, message=message, by=by)

    _done(run(go), as_json)


@click.command()
@click.argument("session_id")
@click.argument("request_id")
@click.option(
    "--choice",
    "choices",
    multiple=True,
    metavar="LABEL",
    help="The option chosen for the next question, in order: one --choice per question. A question that allows"
    " several answers takes them as one --choice 'A,B'.",
)
@click.option("--reject", is_flag=True, help="Dismiss the question (the model is told it was not answered).")
@click.option("--by", help="Who answers (recorded with the answer).")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded answer as JSON.")
def answer(
    session_id: str, request_id: str, choices: tuple[str, ...], reject: bool, by: str | None, as_json: bool
) -> None:
    """Answer a question request: --choice LABEL per question, in order (or --reject)."""
    parse_session_id(session_id)
    answers.parse_request_id(request_id)
    answers.parse_by(by)
    if reject == bool(choices):
        raise click.UsageError("give --choice (one per question) or --reject")

    async def go() -> dict[str, object]:
        async with clients() as c:
            groups = [[label] for label in choices]
            return await answers.answer(c.redis, c.db, session_id, request_id, choices=groups, reject=reject, by=by)

    _done(run(go), as_json)
