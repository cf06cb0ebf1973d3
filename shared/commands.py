"""Enqueue, send and cancel: the writes that come from outside the poller (the CLI, other backends).

Each records the request in PostgreSQL (the backstop survives a Redis that lost its data) and makes it in one
atomic Redis step: enqueue and cancel record first, a follow-up to a live session right after it is queued (while
PostgreSQL is down it is queued all the same, and its owner records it). From then on the owning poller is the
only writer of the session.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis

from shared.clock import now_ms
from shared.config import DEFAULT_SERVER
from shared.errors import Conflict, InvalidInput, NotFound, OpenCodeError, SessionLayerError, Unavailable
from shared.ids import SessionId, new_message_id, parse_session_id, parse_text, parse_ticket_id
from shared.models import SESSION_TYPES, dumps, part_key, prompt_entry
from shared.opencode.client import OpenCodeClient
from shared.opencode.servers import OpenCodeServers, parse_directory
from shared.run_options import parse_agent, parse_model, parse_permissions
from shared.store import archive, queueable
from shared.store.archive import LAYER_KEY, ArchiveRow, PgConnection
from shared.store.connections import store_errors
from shared.store.live import LiveState
from shared.store.lua import Scripts
from shared.store.transactions import committed

log = structlog.get_logger(__name__)

MAX_PROMPT_CHARS = 1_000_000
MAX_TITLE_CHARS = 500
MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 32  # objects and arrays nested in one another
MAX_METADATA_INT = 10**1000
TOO_LONG_INT = "metadata holds an integer of more than 1000 digits"


def parse_session_type(value: object) -> str:
    if value not in SESSION_TYPES:
        raise InvalidInput(f"invalid session type {value!r}: expected one of {', '.join(SESSION_TYPES)}")
    return str(value)


def parse_prompt(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("the prompt is empty")
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"the prompt is longer than {MAX_PROMPT_CHARS} characters")
    return value


def parse_title(value: object) -> str:
    """The title goes into the job and the live state as it is (parse_text: no lone surrogate, which Redis's
    enqueue script refused after the session was recorded)."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TITLE_CHARS:
        raise InvalidInput(f"the title must be 1-{MAX_TITLE_CHARS} characters")
    return parse_text(value, "the title")


def _check_values(value: object) -> None:
    """Values JSON and PostgreSQL's jsonb carry, nested at most MAX_METADATA_DEPTH deep, so that nothing fails once
    the session is made in OpenCode (exit 1): objects with string keys, arrays, strings, booleans, null and numbers.
    The standard library reads NaN and Infinity (JSON has neither) and integers of any length; the Python API may
    pass anything (bytes, a date, a set, a tuple), which failed to encode or was changed on the way (a tuple became
    an array, a key 1 "1"). One walk, without recursion: any depth is safe."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInput(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
            if isinstance(item, dict) and (odd := [key for key in item if not isinstance(key, str)]):
                raise InvalidInput(f"metadata holds a key that is not a string: {odd[0]!r}")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif not isinstance(item, str | int | float) and item is not None:  # bool is an int
            raise InvalidInput(f"metadata holds a value of type {type(item).__name__}, which is not JSON")
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidInput(f"metadata holds {item}, which is not a JSON number")
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) >= MAX_METADATA_INT:
            raise InvalidInput(TOO_LONG_INT)


def parse_metadata(value: object) -> dict[str, Any]:
    """Metadata is a JSON object (a string is parsed) nested at most MAX_METADATA_DEPTH deep; our own
    bookkeeping key is reserved."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"metadata is not valid JSON: {exc.msg} at position {exc.pos}") from None
        except RecursionError:
            raise InvalidInput(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels") from None
        except ValueError:  # an integer of more digits than Python converts (4,300)
            raise InvalidInput(TOO_LONG_INT) from None
    _check_values(value)
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be a JSON object")
    if LAYER_KEY in value:
        raise InvalidInput(f"metadata key {LAYER_KEY!r} is reserved")
    if len(dumps(value).encode()) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    return value


async def enqueue(
    redis: Redis,
    db: PgConnection,
    opencode: OpenCodeClient | OpenCodeServers,
    *,
    session_type: str,
    ticket_id: str | None = None,
    prompt: str | None = None,
    title: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    server: str | None = None,
    directory: str | None = None,
    agent: str | None = None,
    model: str | None = None,
    permission: Sequence[str | Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Create the OpenCode session and queue it for a poller; returns the pending state without waiting.

    `server` (a name of `opencode`, an OpenCodeServers; None: the default one) and `directory` (absolute;
    sent as `?directory=` on every OpenCode call for the session) pick where it runs. InvalidInput for an
    unknown server or a relative or empty directory, before anything is created. `agent`, `model`
    (`PROVIDER/MODEL`) and the `permission` rules (`PERMISSION[:PATTERN]=allow|ask|deny`, or
    `{permission, pattern, action}`) are given to OpenCode with the session.
    """
    kind = parse_session_type(session_type)
    where = parse_directory(directory)
    if isinstance(opencode, OpenCodeServers):
        name = opencode.config(server).name
        opencode = opencode.client(name, where)
        server = None if name == DEFAULT_SERVER else name  # the default server is recorded as none, as before
    elif server is not None or where is not None:
        raise InvalidInput("server and directory need the OpenCode servers (an OpenCodeServers), not one client")
    ticket = parse_ticket_id(ticket_id) if ticket_id is not None else None
    text = parse_prompt(prompt) if prompt is not None else None
    if title is not None:
        parse_title(title)
    user_meta = parse_metadata(metadata) if metadata is not None else {}
    agent_name = parse_agent(agent) if agent is not None else None
    model_ref = parse_model(model) if model is not None else None
    rules = parse_permissions(permission) or None

    session = await _create_session(opencode, title=title, agent=agent_name, model=model_ref, permission=rules)
    sid = parse_session_id(session["id"])
    prompts = [{"messageID": new_message_id(), "text": text}] if text is not None else []
    now = now_ms()
    state = LiveState(
        session_id=sid,
        ticket_id=ticket,
        session_type=kind,
        title=title,
        started_at=now,
        updated_at=now,
        metadata=user_meta,
        server=server,
        directory=where,
    )
    try:
        async with committed(db):
            await archive.insert_pending(db, state, user_metadata=user_meta, prompts=prompts)
    except BaseException:
        await _forget(opencode, sid)  # not recorded anywhere: leave no empty session behind in OpenCode
        raise
    entries = [prompt_entry(p["messageID"], p["text"]) for p in prompts]
    try:
        await _queue(redis, state, entries, epoch=0)
    except Unavailable as exc:
        # The row is in PostgreSQL: the pollers' backstop queues it once Redis is back. Say so, so that the
        # caller does not enqueue a duplicate.
        raise Unavailable(f"{exc.message}; session {sid} is recorded and will be queued when Redis is back") from exc
    log.info("session_enqueued", session_id=sid, session_type=kind, prompts=len(prompts))
    return {
        "sessionId": sid,
        "ticketId": ticket,
        "sessionType": kind,
        "status": "pending",
        "title": title,
        "error": None,
        "startedAt": now,
        "updatedAt": now,
        "metadata": user_meta,
        "messages": [],
        "currentToolCalls": [],
        "seq": 1,
        "live": True,
        "server": state.server or DEFAULT_SERVER,
        "directory": where,
    }


async def _create_session(opencode: OpenCodeClient, **fields: Any) -> dict[str, Any]:
    """The new OpenCode session. A 404 here is no unknown session but a server without `POST /session`: say so.
    Was: `error: '{"error":"Not Found","detail":null}'`, the body alone, naming neither OpenCode nor the URL."""
    try:
        return dict(await opencode.create_session(**fields))
    except NotFound as exc:
        raise OpenCodeError(
            f"OpenCode at {opencode.base_url} answered POST /session with 404 ({exc.message}): is it an OpenCode"
            " server (OPENCODE_URL, OPENCODE_SERVERS)?",
            status_code=404,
        ) from exc


async def _forget(opencode: OpenCodeClient, sid: SessionId) -> None:
    try:
        await opencode.delete_session(sid)
    except SessionLayerError as exc:
        log.warning("opencode_session_left_behind", session_id=sid, error=exc.message)


async def send(redis: Redis, db: PgConnection, session_id: str, text: str) -> str:
    """Queue a follow-up prompt; an archived session comes back to life. Returns the prompt's messageID."""
    sid = parse_session_id(session_id)
    body = parse_prompt(text)
    message_id = new_message_id()
    entry = prompt_entry(message_id, body)
    scripts = Scripts(redis)
    with store_errors("Redis"):
        queued = await scripts.send(sid, entry)
    if queued:
        log.info("prompt_queued", session_id=sid, message_id=message_id)
        await _record_prompt(db, sid, {"messageID": message_id, "text": body})
        return message_id
    async with committed(db):
        # Locked until queued: a revival racing this one reads the row with this prompt in it (was: one prompt
        # overwritten), and queues after it, in the row's order; a queueing that fails leaves the row as it was.
        row = await queueable.past_any_lost_run(redis, await _archived_row(db, sid, for_update=True))
        revival = _revival(row)  # before the row is reopened
        await archive.reopen(db, row, {"messageID": message_id, "text": body})
        await _revive(redis, revival, [entry], cancel=False)
    log.info("session_revived", session_id=sid, message_id=message_id)
    return message_id


async def _record_prompt(db: PgConnection, sid: SessionId, prompt: dict[str, str]) -> None:
    """The queued prompt, recorded in the row for the backstop. Its owner records it too, but only on its next
    claim record: until then the prompt was in Redis alone, and a Redis that lost its data lost it (the backstop
    revived the session without it). While PostgreSQL is down the prompt stays queued, for the owner to record."""
    try:
        async with committed(db):
            await archive.record_prompt(db, sid, prompt)
    except Unavailable as exc:
        log.warning("prompt_record_left_to_owner", session_id=sid, message_id=prompt["messageID"], error=exc.message)


async def cancel(redis: Redis, db: PgConnection, session_id: str) -> str:
    """Ask the owner to abort the session (or a poller to drop it before it starts); final status `cancelled`.

    The request is recorded in the row first, so the PostgreSQL backstop re-queues the session still cancelled
    if Redis loses it. Returns "requested"; raises Conflict when the session already ended, NotFound when it
    never existed.
    """
    sid = parse_session_id(session_id)
    async with committed(db):
        row = await archive.request_cancel(db, sid)
    with store_errors("Redis"):
        if await Scripts(redis).cancel(sid):
            log.info("cancel_requested", session_id=sid)
            return "requested"
    if row is None:
        async with committed(db, reads_only=True):
            row = await _archived_row(db, sid)
        if not row.unfinished:
            raise Conflict(f"session {sid} already ended with status {row.status}")
    # Live state was lost (Redis restarted): queue it again, already cancelled, rather than wait for the backstop.
    await _revive(redis, _revival(await queueable.past_any_lost_run(redis, row)), [], cancel=True)
    log.info("cancel_requested", session_id=sid, revived=True)
    return "requested"


async def _queue(
    redis: Redis,
    state: LiveState,
    prompts: list[str],
    *,
    epoch: int,
    messages: list[Any] | None = None,
    cancel: bool = False,
    if_exists: str = "append",
    seq: int = 1,
    sending: str | None = None,
) -> int:
    job = {
        "sessionId": state.session_id,
        "ticketId": state.ticket_id or "",
        "sessionType": state.session_type,
        "title": state.title or "",
        "createdAt": str(state.updated_at),
        "cancel": "1" if cancel else "0",
        # Fencing epochs only grow: a revived job continues from the last owner recorded in PostgreSQL.
        "epoch": str(epoch),
    }
    job |= {k: v for k, v in (("server", state.server), ("directory", state.directory)) if v}
    job |= {"promptSending": sending} if sending else {}
    fields = state.encode()
    queueable.check_fields(job)  # InvalidInput naming a field the script cannot read, not its error every time
    queueable.check_fields(fields)
    infos = {m["info"]["id"]: dumps(m["info"]) for m in messages or []}
    parts = {part_key(p): dumps(p) for m in messages or [] for p in m["parts"]}
    with store_errors("Redis"):
        created = await Scripts(redis).enqueue(
            state.session_id,
            state.ticket_id,
            job=job,
            state=fields,
            prompts=prompts,
            index_event=state.index_event("appeared"),
            messages=infos,
            parts=parts,
            if_exists=if_exists,
            seq=seq,
        )
    return created


async def _archived_row(db: PgConnection, sid: SessionId, *, for_update: bool = False) -> ArchiveRow:
    row = await archive.fetch(db, sid, for_update=for_update)
    if row is None:
        raise NotFound(f"session {sid} not found")
    return row


@dataclass(frozen=True, slots=True)
class _Revival:
    """What queueing an archived row again writes to Redis, read and checked from the row."""

    state: LiveState
    epoch: int
    messages: list[Any]
    seq: int


def _revival(row: ArchiveRow) -> _Revival:
    """The row's revival, checked before anything is written: a row of another shape than ours (a ticket id,
    title, epoch or message another backend wrote) is InvalidInput naming the field. Was: `send` reopened such a
    row first, then failed, leaving it pending with nothing queued."""
    layer = queueable.layer_of(row)
    queueable.check_title(layer)
    state = row.pending_state(now_ms())  # InvalidInput for a ticket id parse_ticket_id refuses
    queueable.check_fields(state.encode())
    return _Revival(state, queueable.epoch_of(layer), queueable.messages_of(row.messages), queueable.next_seq(layer))


async def _revive(
    redis: Redis,
    revival: _Revival,
    prompts: list[str],
    *,
    cancel: bool,
    if_exists: str = "append",
    sending: str | None = None,
) -> int:
    """Recreate live state from an archived row, seeded with its messages, so readers see no gap."""
    return await _queue(
        redis,
        revival.state,
        prompts,
        epoch=revival.epoch,
        messages=revival.messages,
        cancel=cancel,
        if_exists=if_exists,
        seq=revival.seq,
        sending=sending,
    )


async def requeue_from_archive(redis: Redis, row: ArchiveRow, carried: queueable.Carried | None = None) -> bool:
    """The PostgreSQL backstop: queue a pending/running row whose live state is gone. False if it is live.

    Every prompt the row records is queued again (the poller skips those OpenCode already has), and a cancel
    the row records travels with the job, so the new owner aborts the session. `carried`: what a job dropped
    because Redis went back held that the row may not (poller/rewound.py).

    Other backends write these rows too (README: job wire format), so each field is checked before Redis is
    touched: a row that cannot be queued as it is (a ticket id, title, epoch, prompt or message of another shape
    than ours) is InvalidInput naming the field, which the backstop logs and passes over.
    """
    revival = _revival(row)
    prompts = queueable.prompts_of(queueable.layer_of(row))
    carried = carried or queueable.Carried()
    queued = await _revive(
        redis,
        revival,
        carried.prompts_after(prompts),
        cancel=row.cancel_requested,
        if_exists="skip",
        sending=carried.sending,
    )
    return queued == 1
