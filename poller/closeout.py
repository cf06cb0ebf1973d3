"""The end of a session: archive to PostgreSQL until it commits, then the fenced finish in Redis.

Neither store being down loses anything: the live state stays in Redis until the archive has committed, and
each step is retried (one backoff across both) until it is done or the fence refuses it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
import structlog

from poller.deps import TrackerDeps
from shared.backoff import Backoff
from shared.clock import now_ms
from shared.errors import LeaseLost, Unavailable
from shared.models import dumps
from shared.store.connections import store_errors
from shared.store.lease import Lease
from shared.store.live import LiveState, read_record

log = structlog.get_logger(__name__)

STORE_BACKOFF_BASE_S = 0.2
STORE_BACKOFF_CAP_S = 5.0

T = TypeVar("T")


async def until_done(step: Callable[[], Awaitable[T]], backoff: Backoff, retry_event: str) -> T:
    """Run `step` until it no longer raises Unavailable, sleeping on `backoff` in between."""
    while True:
        try:
            return await step()
        except Unavailable as exc:
            delay = backoff.failed(time.monotonic())
            log.warning(retry_event, error=exc.message, retry_in_s=round(delay, 2))
            await anyio.sleep(delay)


async def archive_final(
    deps: TrackerDeps,
    lease: Lease,
    session: LiveState,
    messages: Sequence[Any] | None,
    *,
    status: str,
    error: str | None,
    final_seq: int,
    backoff: Backoff,
) -> None:
    """The archive, retried while PostgreSQL is down; `messages=None` keeps the messages the row has.
    Raises LeaseLost when the row holds a newer owner's epoch."""

    async def archive() -> bool:
        try:
            return await deps.archive.record_final(
                session, lease.epoch, status=status, messages=messages, error=error, seq=final_seq
            )
        except Unavailable:
            deps.metrics.archive_retries.labels(deps.server).inc()
            raise

    if not await until_done(archive, backoff, "archive_retry"):
        raise LeaseLost("PostgreSQL holds a newer owner's epoch")


async def finish_live(
    deps: TrackerDeps,
    lease: Lease,
    session: LiveState,
    *,
    status: str,
    error: str | None,
    prompts_rev: str,
    backoff: Backoff,
) -> bool:
    """The fenced finish in Redis: the final event, the live state gone. False when a prompt or cancel arrived
    since `prompts_rev` (the session goes on); raises LeaseLost when the lease is gone."""
    completed = dataclasses.replace(session, status=status, updated_at=now_ms())
    event = dumps({"type": "complete", "sessionId": lease.session_id, "status": status, "error": error})

    async def finish() -> int:
        with store_errors("Redis"):
            return await deps.scripts.finish(
                lease,
                session.ticket_id,
                prompts_rev=prompts_rev,
                event=event,
                index_event=completed.index_event("ended"),
            )

    seq = await until_done(finish, backoff, "finish_retry")
    if seq == -1:
        raise LeaseLost("lease lost before the live state was cleaned")
    if seq == -2:
        log.info("session_continues", reason="a prompt or cancel arrived while archiving")
        return False
    deps.metrics.archived.labels(deps.server, status).inc()
    log.info("session_archived", status=status, seq=seq)
    return True


async def close_out(
    deps: TrackerDeps,
    lease: Lease,
    session: LiveState,
    messages: Sequence[Any],
    *,
    status: str,
    error: str | None,
    final_seq: int,
    prompts_rev: str,
) -> bool:
    """True when archived and the live state cleaned; False when a prompt or cancel arrived meanwhile (the
    session goes on). Raises LeaseLost when either store holds a newer owner.

    No `messages`: the owner has polled none (a new owner whose first poll found the session gone, or OpenCode down
    past the deadline), so what Redis holds is archived — a poll that found none left Redis with none. Was: the
    archive was written empty, every message mirrored before the takeover lost."""
    backoff = Backoff(STORE_BACKOFF_BASE_S, STORE_BACKOFF_CAP_S)
    if not messages:
        record = await until_done(lambda: read_record(deps.redis, lease.session_id), backoff, "archive_retry")
        messages = record.messages() if record is not None else []
    await archive_final(
        deps, lease, session, messages, status=status, error=error, final_seq=final_seq, backoff=backoff
    )
    return await finish_live(deps, lease, session, status=status, error=error, prompts_rev=prompts_rev, backoff=backoff)
