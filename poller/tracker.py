"""SessionTracker: one per owned session; tick → fetch → diff → fenced write → deliver prompts → finish."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup
from redis.asyncio import Redis

from poller.archive import Archive
from poller.backoff import Backoff
from poller.completion import ORPHANED_RUN_ERROR, outcome, run_finished, run_orphaned
from poller.diff import Mirror, check_shape, diff, merge_tail
from poller.event_apply import apply_events, keep_streamed_texts, streaming_keys
from poller.events import EventRouter, Inbox
from poller.metrics import Metrics
from poller.prompts import PromptDelivery
from poller.status_board import StatusBoard
from poller.ticker import Cadence
from poller.writer import StateWriter
from shared.errors import LeaseLost, NotFound, OpenCodeError, Unavailable
from shared.models import as_text, dumps
from shared.opencode.client import OpenCodeClient
from shared.store import keys
from shared.store.connections import store_errors
from shared.store.lease import Lease
from shared.store.live import LiveState, read_record
from shared.store.lua import Scripts

log = structlog.get_logger(__name__)

TAIL_LIMIT = 4  # a poll fetches the newest messages only; more new ones than this fall back to a full poll
FULL_POLL_EVERY = 20  # ...and every 20th poll (10 s at 500 ms) fetches the whole list
STORE_BACKOFF_BASE_S = 0.2
STORE_BACKOFF_CAP_S = 5.0


@dataclass(frozen=True, slots=True)
class TrackerDeps:
    """What every tracker of a replica shares."""

    redis: Redis
    scripts: Scripts
    opencode: OpenCodeClient
    archive: Archive
    board: StatusBoard
    poll_interval_s: float
    retry_deadline_s: float
    metrics: Metrics
    router: EventRouter | None = None  # None: OPENCODE_EVENTS=off, polling alone
    poll_interval_events_s: float = 2.0  # while the event stream is healthy
    event_coalesce_s: float = 0.05
    orphaned_run_grace_s: float = 30.0  # idle with the newest assistant message open this long: the run is lost


class SessionTracker:
    """Mirrors one OpenCode session into Redis until it ends and is archived, or the lease is lost."""

    def __init__(self, deps: TrackerDeps, lease: Lease, lease_valid: Callable[[], bool]) -> None:
        self._deps = deps
        self._lease = lease
        self._sid = lease.session_id
        self._epoch = lease.epoch
        self._prompts = PromptDelivery(deps.opencode, self._sid, lease_valid)
        self._opencode_backoff = Backoff(deps.poll_interval_s, 10 * deps.poll_interval_s, deps.retry_deadline_s)
        self._store_backoff = Backoff(STORE_BACKOFF_BASE_S, STORE_BACKOFF_CAP_S)
        self._retry_at = 0.0
        self._mirror = Mirror()
        self._messages: list[Any] = []
        self._session = LiveState(session_id=self._sid)  # read from Redis by _load()
        self._writer: StateWriter | None = None
        self._prompts_rev: str | None = None
        self._cancel = False
        self._aborted_at: float | None = None
        self._idle_since: float | None = None  # since when OpenCode has reported the session idle, without a break
        self._claim_recorded = False
        self._inbox = Inbox(wakeable=deps.router is not None)
        self._polls_since_full = 0
        self._last_event_write = -float("inf")
        self._frozen_parts: set[str] = set()
        self._full_polls_due = True  # the first poll fetches the whole list
        self.job_rev: str | None = None  # the job's promptsRev as the worker last read it for every session at once

    @property
    def writes(self) -> int:
        return self._writer.writes if self._writer else 0

    async def run(self) -> None:
        with structlog.contextvars.bound_contextvars(session_id=self._sid):
            log.info("session_claimed", epoch=self._epoch)
            router = self._deps.router
            if router is not None:
                router.attach(self._sid, self._inbox)
            try:
                async with anyio.create_task_group() as tg:
                    await self._load()
                    await self._loop(tg)
                    tg.cancel_scope.cancel()
            except LeaseLost as exc:
                self._deps.metrics.lease_lost.inc()
                log.info("lease_lost", reason=exc.message)
            finally:
                if router is not None:
                    router.detach(self._sid)

    async def _loop(self, tg: TaskGroup) -> None:
        """Tick on a drift-free cadence; between ticks, apply OpenCode's events as they come (coalesced).

        Every tick reads the job (prompts, cancel). OpenCode's message list is fetched every tick while polling
        alone, and at the slower POLL_INTERVAL_EVENTS_MS while the event stream is healthy.
        """
        cadence = Cadence()
        last_poll = -float("inf")
        while True:
            await self._inbox.wait(cadence.wait_s())
            if self._inbox.events:
                # the first change of a quiet spell is written at once; a burst (text deltas) is written at most
                # once per coalescing window, not once per token
                wait_s = self._last_event_write + self._deps.event_coalesce_s - time.monotonic()
                if wait_s > 0:
                    await anyio.sleep(wait_s)
                await self._apply_events(self._inbox.take())
                self._last_event_write = time.monotonic()
            if self._inbox.poll_now or cadence.due():
                now = time.monotonic()
                # half a tick of slack: a tick that fires a hair early must not skip its poll
                since_poll = now - last_poll + self._deps.poll_interval_s / 2
                poll = self._inbox.poll_now or since_poll >= self._poll_interval_s()
                self._inbox.poll_now = False
                self._deps.metrics.tick_lag.observe(cadence.lag())
                if poll:
                    last_poll = now
                if await self._tick(tg, poll_opencode=poll):
                    return
                cadence.advance(self._deps.poll_interval_s)
                if self._retry_at > time.monotonic():
                    cadence.next_at = self._retry_at  # a failed poll retries on its backoff

    def _poll_interval_s(self) -> float:
        router = self._deps.router
        healthy = router is not None and router.healthy
        return self._deps.poll_interval_events_s if healthy else self._deps.poll_interval_s

    async def _apply_events(self, events: list[Any]) -> None:
        """The fast path: same fenced write as a poll, so clients see one seq stream either way."""
        if self._inbox.gap:  # deltas were lost while the stream was down: stop extending those texts
            self._inbox.gap = False
            self._frozen_parts |= streaming_keys(self._mirror)
        delta = apply_events(self._mirror, events, self._frozen_parts)
        if not delta:
            return
        try:
            await self._writer_or_fail().apply(self._lease, delta)
        except Unavailable as exc:
            log.warning("event_write_failed", error=exc.message)  # the next poll writes the truth
            self._inbox.request_poll()
            return
        self._mirror.apply(delta)
        self._deps.metrics.state_writes.labels("event").inc()

    async def _load(self) -> None:
        """Start from what Redis holds, so the first diff writes only what differs from it."""
        record = await read_record(self._deps.redis, self._sid)
        if record is None:
            raise LeaseLost("the session has no live state (Redis lost it; the backstop will re-queue it)")
        self._session = record.state
        self._mirror.infos = record.infos
        self._mirror.parts = record.parts
        self._mirror.tool_calls = record.state.current_tool_calls
        self._writer = StateWriter(self._deps.scripts, self._session)
        self._writer.seq = record.state.seq

    async def _tick(self, tg: TaskGroup, poll_opencode: bool = True) -> bool:
        """One tick; True when the session ended and is archived."""
        if time.monotonic() < self._retry_at:
            return False
        try:
            await self._sync_job()
        except Unavailable as exc:
            return self._wait(self._store_backoff, exc)
        if not poll_opencode and not self._prompts.pending and not self._abort_due():
            return False  # the event stream carries the changes; nothing of ours waits on OpenCode
        try:
            fetched_at = time.monotonic()
            if self._abort_due():
                await self._deps.opencode.abort(self._sid)
                self._aborted_at = time.monotonic()
                log.info("session_aborted")
            messages, tail = await self._poll()
            self._opencode_backoff.reset()
        except NotFound as exc:
            return await self._end("error", f"OpenCode no longer has this session: {exc.message}")
        except (Unavailable, OpenCodeError) as exc:
            self._deps.metrics.poll_failures.inc()
            if self._opencode_backoff.expired(time.monotonic()):
                deadline = self._deps.retry_deadline_s
                return await self._end("error", f"OpenCode failed for {deadline:.0f} s: {exc.message}")
            return self._wait(self._opencode_backoff, exc)
        try:
            await self._mirror_changes(messages, tail)
            await self._prompts.step(tg, self._deps.scripts, self._lease, self._mirror.infos, fetched_at)
            if self._prompts.fatal:
                return await self._end("error", self._prompts.fatal)
            if self._finished():
                if tail is not None:  # decide, and archive, on the whole list: poll it at once
                    self._full_polls_due = True
                    self._inbox.request_poll()
                    return False
                if not self._cancel and self._orphaned():
                    log.warning("run_orphaned", grace_s=self._deps.orphaned_run_grace_s)
                    return await self._end("error", ORPHANED_RUN_ERROR)
                return await self._end(*outcome(self._messages, self._cancel))
        except Unavailable as exc:
            return self._wait(self._store_backoff, exc)
        self._store_backoff.reset()
        return False

    async def _poll(self) -> tuple[list[Any], list[Any] | None]:
        """The whole list, and the tail it came from when only the newest messages were fetched.

        A tail poll (`?limit=`) costs the same at 200 messages as at 2; the whole list is fetched on the first
        poll, every FULL_POLL_EVERY polls (OpenCode may still change older messages, e.g. compaction), when
        the tail does not overlap the last list, and before a session is archived.
        """
        self._deps.metrics.polls.inc()
        self._polls_since_full += 1
        if not self._full_polls_due and self._polls_since_full < FULL_POLL_EVERY:
            tail = check_shape(await self._deps.opencode.messages(self._sid, limit=TAIL_LIMIT))
            merged = merge_tail(self._messages, tail, TAIL_LIMIT)
            if merged is not None:
                return merged, tail
        messages = check_shape(await self._deps.opencode.messages(self._sid))
        self._polls_since_full = 0
        self._full_polls_due = False
        return messages, None

    async def _sync_job(self) -> None:
        """Pick up new prompts and a cancel request; record both in PostgreSQL before acting on them."""
        if self.job_rev is None or self.job_rev != self._prompts_rev:
            await self._read_job()
        if self._cancel:
            self._prompts.pending.clear()
        writer = self._writer_or_fail()
        if writer.status != "running":
            await writer.apply(self._lease, status="running")
        if not self._claim_recorded:
            await self._record_claim()

    async def _read_job(self) -> None:
        sid = self._sid
        with store_errors("Redis"):
            rev, cancel = await self._deps.redis.hmget(keys.job(sid), ["promptsRev", "cancel"])
        if rev is None:
            raise LeaseLost("the job is gone")
        if as_text(rev) != self._prompts_rev:
            with store_errors("Redis"):
                entries = await self._deps.redis.lrange(keys.prompts(sid), 0, -1)
            self._prompts.load(entries)
            self._prompts_rev = as_text(rev)
            self._claim_recorded = False
        self._cancel = cancel == b"1"

    async def _record_claim(self) -> None:
        """The PostgreSQL backstop row; while PostgreSQL is down polling goes on and this is retried next tick."""
        records = [p.as_record() for p in self._prompts.pending]
        try:
            recorded = await self._deps.archive.record_claim(self._session, self._epoch, records)
        except Unavailable as exc:
            log.warning("claim_record_retry", error=exc.message)
            return
        if not recorded:
            raise LeaseLost("PostgreSQL holds a newer owner's epoch")
        self._claim_recorded = True

    async def _mirror_changes(self, messages: list[Any], tail: list[Any] | None) -> None:
        router = self._deps.router
        polled = tail if tail is not None else messages
        # what our deltas built of a still-streaming part is ahead of OpenCode's stored "": keep it
        mirrored = keep_streamed_texts(self._mirror, polled) if router is not None else polled
        delta = diff(self._mirror, mirrored, partial=tail is not None)
        if delta:  # an unchanged poll writes nothing and publishes nothing
            await self._writer_or_fail().apply(self._lease, delta)
            self._deps.metrics.state_writes.labels("poll").inc()
            if router is not None and router.healthy:
                self._deps.metrics.poll_corrections.inc()
            if tail is None:
                self._mirror.update(mirrored)
            else:
                self._mirror.update_tail(mirrored)
        self._messages = messages

    def _abort_due(self) -> bool:
        """Abort once cancel is asked, and again if OpenCode is busy after our last abort: a prompt that was
        on its way when the cancel came can land after the abort and start a run."""
        if not self._cancel:
            return False
        if self._aborted_at is None:
            return True
        return bool(self._deps.board.busy(self._sid, self._aborted_at))

    def _finished(self) -> bool:
        since = max(self._prompts.last_attempt_at or 0.0, self._aborted_at or 0.0)
        busy = self._deps.board.busy(self._sid, since) if self._prompts.idle else None
        if busy is None or busy:
            self._idle_since = None
            return False
        if self._idle_since is None:
            self._idle_since = time.monotonic()
        if self._cancel or not self._messages:
            return True  # nothing runs: a cancelled session, or one that was never prompted
        return run_finished(self._messages, busy) or self._orphaned()

    def _orphaned(self) -> bool:
        """OpenCode lost the run (restarted mid-run): idle past the grace period, the newest assistant message open."""
        idle_for_s = time.monotonic() - self._idle_since if self._idle_since is not None else 0.0
        return run_orphaned(self._messages, False, idle_for_s, self._deps.orphaned_run_grace_s)

    async def _end(self, status: str, error: str | None) -> bool:
        """Archive until PostgreSQL commits, then finish in Redis; False when new prompts arrived meanwhile."""
        writer = self._writer_or_fail()
        final_seq = writer.seq + 1
        rev = self._prompts_rev or "0"
        backoff = Backoff(STORE_BACKOFF_BASE_S, STORE_BACKOFF_CAP_S)
        while True:
            try:
                stored = await self._deps.archive.record_final(
                    self._session, self._epoch, status=status, messages=self._messages, error=error, seq=final_seq
                )
                break
            except Unavailable as exc:  # PostgreSQL down: keep the live state and try again, never drop it
                self._deps.metrics.archive_retries.inc()
                delay = backoff.failed(time.monotonic())
                log.warning("archive_retry", error=exc.message, retry_in_s=round(delay, 2))
                await anyio.sleep(delay)
        if not stored:
            raise LeaseLost("PostgreSQL holds a newer owner's epoch")
        completed = dataclasses.replace(self._session, status=status, updated_at=int(time.time() * 1000))
        event = dumps({"type": "complete", "sessionId": self._sid, "status": status, "error": error})
        while True:
            try:
                with store_errors("Redis"):
                    seq = await self._deps.scripts.finish(
                        self._lease,
                        self._session.ticket_id,
                        prompts_rev=rev,
                        event=event,
                        index_event=completed.index_event("ended"),
                    )
                break
            except Unavailable as exc:
                delay = backoff.failed(time.monotonic())
                log.warning("finish_retry", error=exc.message, retry_in_s=round(delay, 2))
                await anyio.sleep(delay)
        if seq == -1:
            raise LeaseLost("lease lost before the live state was cleaned")
        if seq == -2:
            log.info("session_continues", reason="a prompt or cancel arrived while archiving")
            self._claim_recorded = False
            return False
        self._deps.metrics.archived.labels(status).inc()
        log.info("session_archived", status=status, messages=len(self._messages), seq=seq)
        return True

    def _wait(self, backoff: Backoff, exc: Exception) -> bool:
        delay = backoff.failed(time.monotonic())
        self._retry_at = time.monotonic() + delay
        log.warning("poll_retry", error=str(exc), failures=backoff.failures, retry_in_s=round(delay, 2))
        return False

    def _writer_or_fail(self) -> StateWriter:
        if self._writer is None:
            raise RuntimeError("tracker used before _load()")
        return self._writer
