"""The Lua scripts, loaded once from package data, each behind a typed async method.

Every key a script touches is named by shared.store.keys; callers pass parsed ids, never key strings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from shared.ids import SessionId, TicketId
from shared.models import as_text, dumps, part_ids
from shared.store import keys
from shared.store.batch import CommandBatch
from shared.store.lease import FairShare, Lease

LEASE_PREFIX = keys.lease(SessionId(""))
JOB_PREFIX = keys.job(SessionId(""))
STATE_PREFIX = keys.session(SessionId(""))
NO_TICKET = "opencode:ticket:-:active"  # a placeholder key for scripts whose ticket key is optional
# leases per claim.lua / renew.lua / release.lua call: a script holds every other client of Redis while it
# runs, ~5 µs a lease (~10 µs claimed)
LEASE_CHUNK = 500


def _load(name: str) -> str:
    return files("shared.store.lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class StateChange:
    """What one apply() writes: scalar fields, upserted/removed messages and parts (JSON text), the event's
    `state` object and the live-index event. apply.lua assembles the published event from these."""

    fields: Mapping[str, str]
    messages: Mapping[str, str]
    parts: Mapping[str, str]
    removed_messages: Sequence[str]
    removed_parts: Sequence[str]
    event_state: str = "{}"
    index_event: str = ""


@dataclass(frozen=True, slots=True)
class Renewed:
    """How far Redis holds a session whose lease was renewed: its live state's `seq` and its job's `promptsRev`
    (None where missing, or not an integer)."""

    seq: int | None
    prompts_rev: int | None


def _int_or_none(value: object) -> int | None:
    try:
        return int(as_text(value)) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class PartAppend:
    """Text appended to one part's streamed field (append.lua): `offset` and `length` (UTF-16 code units, as a
    browser counts) are the field's length before and after; `stored_bytes` and `prefix_bytes` are the part's
    stored JSON length before and where its text starts, which the script checks; `prefix` replaces the other
    fields ("" keeps them); `escaped` is the text JSON-escaped, without quotes."""

    key: str
    field: str
    stored_bytes: int
    prefix_bytes: int
    prefix: str
    offset: int
    length: int
    escaped: str


class Scripts:
    """One instance per Redis client; a script's source is sent again if the server lost its cache.

    The fenced state writes (apply, append), which every tracker of a replica issues, go out batched (CommandBatch).
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._batch = CommandBatch(redis)
        self._enqueue = redis.register_script(_load("enqueue"))
        self._send = redis.register_script(_load("send"))
        self._cancel = redis.register_script(_load("cancel"))
        self._claim = redis.register_script(_load("claim"))
        self._renew = redis.register_script(_load("renew"))
        self._release = redis.register_script(_load("release"))
        self._apply = redis.register_script(_load("apply"))
        self._append = redis.register_script(_load("append"))
        self._finish = redis.register_script(_load("finish"))
        self._drop = redis.register_script(_load("drop"))
        self._pop_prompt = redis.register_script(_load("pop_prompt"))
        self._mark_sending = redis.register_script(_load("mark_sending"))
        self._count_failure = redis.register_script(_load("count_failure"))
        self._answer = redis.register_script(_load("answer"))

    async def enqueue(
        self,
        session_id: SessionId,
        ticket_id: TicketId | None,
        *,
        job: Mapping[str, str],
        state: Mapping[str, str],
        prompts: Sequence[str],
        index_event: str,
        messages: Mapping[str, str] | None = None,
        parts: Mapping[str, str] | None = None,
        if_exists: str = "append",
        seq: int = 1,
    ) -> int:
        """1 created; 0 the job existed and the prompts were appended; -1 it existed and nothing was done.
        A created live state starts at `seq`."""
        ticket_key = keys.ticket_active(ticket_id) if ticket_id else NO_TICKET
        script_keys = [keys.job(session_id), keys.prompts(session_id), keys.QUEUE, *keys.state_keys(session_id)]
        script_keys += [keys.LIVE_INDEX, keys.LIVE_UPDATES, ticket_key, keys.updates(session_id), keys.JOB_REVS]
        args = [
            session_id,
            json.dumps(dict(job)),
            json.dumps(dict(state)),
            json.dumps(list(prompts)),
            json.dumps(dict(messages or {})),
            json.dumps(dict(parts or {})),
            index_event,
            "1" if ticket_id else "0",
            if_exists,
            str(seq),
        ]
        return int(await self._enqueue(keys=script_keys, args=args))

    async def send(self, session_id: SessionId, prompt: str) -> bool:
        """False when the session has no live job."""
        script_keys = [keys.job(session_id), keys.prompts(session_id), keys.JOB_REVS]
        return bool(await self._send(keys=script_keys, args=[prompt, session_id]))

    async def cancel(self, session_id: SessionId) -> bool:
        """False when the session has no live job."""
        script_keys = [keys.job(session_id), keys.QUEUE, keys.lease(session_id), keys.JOB_REVS]
        return bool(await self._cancel(keys=script_keys, args=[session_id]))

    async def claim(
        self,
        replica_id: str,
        lease_ttl_ms: int,
        max_jobs: int,
        *,
        share: FairShare | None = None,
    ) -> list[Lease]:
        """Up to `max_jobs` due jobs; with `share`, no more than the replica's fair share of them (claim.lua).

        In calls of LEASE_CHUNK jobs, as long as each call takes all it may: claiming 4,000 jobs in one call held
        Redis for 38 ms (a survivor's takeover), every state write of every replica behind it.
        """
        leases: list[Lease] = []
        while (chunk := min(LEASE_CHUNK, max_jobs - len(leases))) > 0:
            args: list[str | int] = [replica_id, lease_ttl_ms, chunk, LEASE_PREFIX, JOB_PREFIX]
            if share:  # the jobs taken so far count as held, and towards the least
                args += [share.least - len(leases), share.held + len(leases), share.live_since_ms]
            else:
                args += [0, 0, ""]
            flat = await self._claim(keys=[keys.QUEUE, keys.POLLERS], args=args)
            leases += (
                Lease.from_token(SessionId(as_text(flat[i])), as_text(flat[i + 1])) for i in range(0, len(flat), 2)
            )
            if len(flat) // 2 < chunk:  # nothing more is due, the share is reached, or some were not claimable yet
                break
        return leases

    async def renew(self, lease_ttl_ms: int, leases: Sequence[Lease]) -> list[Renewed | None]:
        """One entry per lease, in order: None means it is lost and its tracker must stop; else how far Redis holds
        the session (poller/rewound.py).

        In calls of LEASE_CHUNK leases, one after the other. A replica renews every lease it holds at once, and one
        call for 8,000 leases held Redis for 40 ms (and the replica's loop for 17 ms, encoding it): every state
        write of every replica waited behind it, each renewal, and those waits were the P2 benchmark's p99.
        """
        renewed: list[Renewed | None] = []
        for chunk in _chunks(leases):
            args = [lease_ttl_ms, LEASE_PREFIX, STATE_PREFIX, JOB_PREFIX, *_pairs(chunk)]
            result = await self._batched(self._renew, [keys.QUEUE], args)
            renewed += [Renewed(_int_or_none(entry[0]), _int_or_none(entry[1])) if entry else None for entry in result]
        return renewed

    async def drop(self, lease: Lease) -> tuple[str | None, list[str]] | None:
        """Drop a session whose live state went back (drop.lua): its job's `promptSending` mark and queued prompts,
        or None when the lease is no longer this token's (nothing dropped)."""
        sid = lease.session_id
        script_keys = [keys.lease(sid), *keys.state_keys(sid), keys.job(sid), keys.prompts(sid)]
        script_keys += [keys.QUEUE, keys.LIVE_INDEX, keys.JOB_REVS]
        held = await self._drop(keys=script_keys, args=[lease.token, sid])
        if not held:
            return None
        sending = as_text(held[1]) if held[1] is not None else None
        return sending, [as_text(entry) for entry in held[2]]

    async def release(self, leases: Sequence[Lease]) -> int:
        """How many of `leases` were still this replica's and are now given back (in chunks, as `renew`)."""
        released = 0
        for chunk in _chunks(leases):
            released += int(await self._batched(self._release, [keys.QUEUE], [LEASE_PREFIX, *_pairs(chunk)]))
        return released

    async def apply(self, lease: Lease, change: StateChange) -> int:
        """The new seq, or -1 (nothing written) when the lease is no longer this token's."""
        sid = lease.session_id
        script_keys = [keys.lease(sid), *keys.state_keys(sid), keys.updates(sid), keys.LIVE_UPDATES]
        removed_parts = [dict(zip(("messageID", "id"), part_ids(k), strict=True)) for k in change.removed_parts]
        args: list[Any] = [
            lease.token,
            sid,
            change.event_state,
            dumps(list(change.removed_messages)),
            dumps(removed_parts),
            change.index_event,
        ]
        for mapping in (change.fields, change.messages, change.parts):
            args.append(len(mapping))
            for key, value in mapping.items():
                args += (key, value)
        for removed in (change.removed_messages, change.removed_parts):
            args.append(len(removed))
            args += removed
        return int(await self._batched(self._apply, script_keys, args))

    async def append(self, lease: Lease, updated_at: int, appends: Sequence[PartAppend]) -> int:
        """The new seq; -1 the lease is no longer this token's; -2 a part is not stored as expected (nothing
        written either way: write the whole part instead)."""
        sid = lease.session_id
        script_keys = [keys.lease(sid), keys.session(sid), keys.session_parts(sid), keys.updates(sid)]
        args: list[Any] = [lease.token, sid, updated_at, len(appends)]
        for a in appends:
            args += (a.key, a.field, a.stored_bytes, a.prefix_bytes, a.prefix, a.offset, a.length, a.escaped)
        return int(await self._batched(self._append, script_keys, args))

    async def _batched(self, script: AsyncScript, script_keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._batch.execute("EVALSHA", script.sha, len(script_keys), *script_keys, *args)
        except NoScriptError:  # the server lost its scripts (a restart, SCRIPT FLUSH): redis-py loads it and runs it
            return await script(keys=script_keys, args=args)

    async def finish(
        self,
        lease: Lease,
        ticket_id: TicketId | None,
        *,
        prompts_rev: str,
        event: str,
        index_event: str,
    ) -> int:
        """The final seq; -1 lease lost; -2 a prompt or cancel arrived since prompts_rev was read."""
        sid = lease.session_id
        script_keys = [keys.lease(sid), *keys.state_keys(sid), keys.updates(sid), keys.LIVE_UPDATES]
        script_keys += [keys.job(sid), keys.prompts(sid), keys.QUEUE, keys.LIVE_INDEX]
        script_keys += [keys.ticket_active(ticket_id) if ticket_id else NO_TICKET, keys.JOB_REVS]
        args = [lease.token, sid, prompts_rev, event, index_event, "1" if ticket_id else "0"]
        return int(await self._finish(keys=script_keys, args=args))

    async def pop_prompt(self, lease: Lease, head: str) -> int:
        """1 popped; 0 the head changed; -1 lease lost."""
        sid = lease.session_id
        return int(await self._pop_prompt(keys=[keys.lease(sid), keys.prompts(sid)], args=[lease.token, head]))

    async def mark_sending(self, lease: Lease, message_id: str) -> int:
        """1 noted in the job (`promptSending`) as the prompt about to be sent; -1 lease lost."""
        sid = lease.session_id
        return int(await self._mark_sending(keys=[keys.lease(sid), keys.job(sid)], args=[lease.token, message_id]))

    async def count_failure(self, lease: Lease, cause: str, *, window_ms: int) -> int:
        """The session's failed attempts so far, this one included (a failure more than `window_ms` after the
        last one, by Redis's clock, counts from 1 again); -1 lease lost (nothing counted)."""
        sid = lease.session_id
        args: list[str | int] = [lease.token, cause, window_ms]
        return int(await self._count_failure(keys=[keys.lease(sid), keys.job(sid)], args=args))

    async def answer(self, session_id: SessionId, request_id: str, answer: str) -> int:
        """1 stored for the owner; 0 the session has no live job; -1 the request already has an answer."""
        script_keys = [keys.job(session_id), keys.JOB_REVS]
        return int(await self._answer(keys=script_keys, args=[session_id, request_id, answer]))


def _chunks(leases: Sequence[Lease]) -> Iterator[Sequence[Lease]]:
    return (leases[start : start + LEASE_CHUNK] for start in range(0, len(leases), LEASE_CHUNK))


def _pairs(leases: Iterable[Lease]) -> list[str]:
    return [value for lease in leases for value in (lease.session_id, lease.token)]
