"""SessionTracker: one per owned session; schedules the steps — sync the job, poll, apply events, end."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from poller.answers import TIMEOUT_BY, reject_overdue
from poller.closeout import STORE_BACKOFF_BASE_S, STORE_BACKOFF_CAP_S, close_out
from poller.completion import ORPHANED_RUN_ERROR, outcome, run_finished, run_orphaned, unanswered_prompt
from poller.deps import TrackerDeps
from poller.dropped import DroppedPrompts
from poller.events import Inbox
from poller.failures import abort_run
from poller.job import Job
from poller.pending import PendingRequests
from poller.server_urls import ServerDisputed
from poller.session_mirror import SessionMirror
from poller.ticker import Cadence
from shared.backoff import Backoff
from shared.errors import LeaseLost, NotFound, OpenCodeError, RedisWentBack, SessionLayerError, Unavailable
from shared.store.lease import Lease

log = structlog.get_logger(__name__)


class SessionTracker:
    """Mirrors one OpenCode session into Redis until it ends and is archived, or the lease is lost."""

    def __init__(
        self,
        deps: TrackerDeps,
        lease: Lease,
        lease_valid: Callable[[], bool],
        on_started: Callable[[], None] | None = None,
    ) -> None:
        """`on_started` is called once, as soon as the first tick has recorded the claim (the session's record is
        loaded from Redis, its claim is in PostgreSQL), before it fetches anything from OpenCode; at the latest
        when the first tick ends. A slow or hung OpenCode server does not hold it up."""
        self._deps = deps
        self._on_started = on_started
        self._lease = lease
        self._job = Job(deps, lease, lease_valid)
        self._mirror: SessionMirror | None = None  # loaded from Redis when the tracker starts
        self._inbox = Inbox()
        self._opencode_backoff = Backoff(deps.poll_interval_s, 10 * deps.poll_interval_s, deps.retry_deadline_s)
        self._store_backoff = Backoff(STORE_BACKOFF_BASE_S, STORE_BACKOFF_CAP_S)
        self._retry_at = 0.0
        self.went_back = False  # it stopped because Redis holds the session behind it (poller/rewound.py)
        self._idle_since: float | None = None  # since when OpenCode has reported the session idle, without a break
        self._dropped = DroppedPrompts(
            deps.orphaned_run_grace_s, Backoff(deps.poll_interval_s, 10 * deps.poll_interval_s, deps.retry_deadline_s)
        )
        self._pending = PendingRequests(lease.session_id, [])  # what Redis holds is loaded with the mirror
        self._recorded: set[str] = set()  # requests recorded in PostgreSQL by this tracker
        self._timed_out: set[str] = set()

    @property
    def writes(self) -> int:
        return self._mirror.writer.writes if self._mirror else 0

    @property
    def marks(self) -> tuple[int, int] | None:
        """The seq this tracker's writes reached and the promptsRev it read (poller/rewound.py); None until both."""
        if self._mirror is None or self._job.rev is None or not self._job.rev.isdecimal():
            return None
        return self._mirror.writer.seq, int(self._job.rev)  # the writer's seq starts at the loaded one

    async def run(self) -> bool:
        """True when the session ended and is archived; False when this replica may no longer own it."""
        sid = self._lease.session_id
        with structlog.contextvars.bound_contextvars(session_id=sid):
            log.info("session_claimed", epoch=self._lease.epoch)
            router = self._deps.router
            if router is not None:
                router.attach(sid, self._inbox)
            self._deps.jobs.watch(sid, self._inbox.request_tick)
            try:
                async with anyio.create_task_group() as tg:
                    self._mirror = await SessionMirror.load(self._deps, self._lease)
                    self._pending = PendingRequests(sid, self._mirror.session.pending)
                    await self._loop(tg, self._mirror)
                    tg.cancel_scope.cancel()
                return True
            except* LeaseLost as group:  # anyio 4 raises what the task group's body raised inside a group
                self.went_back = any(isinstance(exc, RedisWentBack) for exc in group.exceptions)
                self._deps.metrics.lease_lost.labels(self._deps.server).inc()
                log.info("lease_lost", reason="; ".join(str(exc) for exc in group.exceptions))
            finally:
                # this tracker's own entries: a newer tracker of the session (the lease claimed again after
                # Redis lost it) may have taken the session's place in each
                self._deps.board.forget(sid, self._inbox.request_poll)
                self._deps.jobs.forget(sid, self._inbox.request_tick)
                if router is not None:
                    router.detach(sid, self._inbox)
        return False

    async def _loop(self, tg: TaskGroup, mirror: SessionMirror) -> None:
        """Tick on a drift-free cadence; between ticks, apply OpenCode's events as they come (coalesced).

        Every tick syncs the job (prompts, cancel). OpenCode's message list is fetched every tick while
        polling alone, and at the slower POLL_INTERVAL_EVENTS_MS while the event stream is healthy.
        """
        cadence = Cadence(phase_s=random.uniform(0, self._deps.poll_interval_s))  # spread, not in step
        last_poll = -float("inf")
        last_event_write = -float("inf")
        while True:
            time_is_up = await self._inbox.wait(cadence.wait_s())
            if self._inbox.events:
                # the first change of a quiet spell is written at once; a burst (text deltas) is written at most
                # once per coalescing window, not once per token
                wait_s = last_event_write + self._deps.event_coalesce_s - time.monotonic()
                if wait_s > 0 and not self._inbox.poll_now:  # a poll is due at once (e.g. idle): do not delay it
                    await anyio.sleep(wait_s)
                await self._apply_events(mirror, self._inbox.take())
                last_event_write = time.monotonic()
                if cadence.wait_s() > self._tick_interval_s():  # the events left something of ours to do (a request)
                    self._inbox.tick_now = True
            if self._inbox.poll_now or self._inbox.tick_now or time_is_up or cadence.due():
                self._inbox.tick_now = False
                now = time.monotonic()
                # half a tick of slack: a tick that fires a hair early must not skip its poll
                since_poll = now - last_poll + self._deps.poll_interval_s / 2
                poll = self._inbox.poll_now or since_poll >= self._poll_interval_s()
                self._inbox.poll_now = False
                self._deps.metrics.tick_lag.observe(cadence.lag())
                if poll:
                    last_poll = now
                if await self._tick(tg, mirror, poll_opencode=poll):
                    return
                self._started()
                cadence.advance(self._tick_interval_s())
                if self._retry_at > time.monotonic():
                    cadence.next_at = self._retry_at  # a failed poll retries on its backoff

    def _started(self) -> None:
        if self._on_started is not None:
            on_started, self._on_started = self._on_started, None
            on_started()

    def _tick_interval_s(self) -> float:
        """The fast cadence while anything of ours waits on a tick; once the event stream carries the changes
        and nothing does, only the slow reconciling poll. A change of the job (a prompt, a cancel, an answer)
        wakes the tracker through the replica's job board, and OpenCode's events wake it through its inbox.

        A tick costs even when it fetches nothing: at 4,000 sessions with events on, three in four ticks were
        such, and ticking only for the poll took the poller from 0.85 to 0.70 cores.
        """
        job = self._job
        waiting = not job.prompts.idle or job.cancel or not job.answers.idle or self._pending or self._pending.departed
        if waiting or self._retry_at > time.monotonic():
            return self._deps.poll_interval_s
        return self._poll_interval_s()

    def _poll_interval_s(self) -> float:
        router = self._deps.router
        healthy = router is not None and router.healthy
        return self._deps.poll_interval_events_s if healthy else self._deps.poll_interval_s

    async def _apply_events(self, mirror: SessionMirror, events: list[Any]) -> None:
        gap, self._inbox.gap = self._inbox.gap, False
        self._pending.apply_events(events)
        try:
            await mirror.write_events(events, gap=gap)
            await self._write_pending(mirror)
        except Unavailable as exc:
            log.warning("event_write_failed", error=exc.message)  # the next poll writes the truth
            self._inbox.request_poll()

    async def _tick(self, tg: TaskGroup, mirror: SessionMirror, poll_opencode: bool) -> bool:
        """One tick; True when the session ended and is archived."""
        if time.monotonic() < self._retry_at:
            return False
        job = self._job
        if job.answers.fatal:  # OpenCode will never take the answer the run waits on: it would wait for ever
            fatal, job.answers.fatal = job.answers.fatal, None  # ended once (a prompt that came meanwhile goes on)
            await abort_run(self._deps, self._lease)  # the run is blocked on that request: OpenCode would keep it
            if job.prompts.idle and unanswered_prompt(mirror.messages) is None:
                return await self._end(mirror, "error", fatal)
            # a follow-up waits (queued, or stored, which the abort left unanswered): it runs, the session goes on
            log.warning("answer_refused_follow_up_goes_on", error=fatal)
            return False
        try:
            await job.sync()
            if self._deps.requests is not None:
                self._pending.reconcile(self._deps.requests, mirror.messages)
            await job.record_claim(mirror.session)
            self._started()
            fetching = poll_opencode or bool(job.prompts.pending) or job.abort_due()
            if not fetching:
                await self._handle_requests(tg, mirror)
        except Unavailable as exc:
            return self._wait(self._store_backoff, exc)
        if not fetching:
            return False  # the event stream carries the changes; nothing of ours waits on OpenCode
        try:
            fetched_at = time.monotonic()
            if self._inbox.confirm_idle:  # OpenCode said idle: confirm on the whole list, and decide on it
                self._inbox.confirm_idle = False
                mirror.full_poll_next()
            if job.abort_due():
                await job.abort()
            messages, tail = await mirror.fetch()
            self._opencode_backoff.reset()
        except NotFound as exc:
            if self._deps.hands_back(self._deps.server, self._lease.session_id):  # another URL elsewhere for it
                raise ServerDisputed(self._deps.server, exc) from exc
            return await self._end(mirror, *self._lost("OpenCode no longer has this session", exc))
        except (Unavailable, OpenCodeError) as exc:
            self._deps.metrics.poll_failures.labels(self._deps.server).inc()
            if self._opencode_backoff.expired(time.monotonic()):
                deadline = self._deps.retry_deadline_s
                return await self._end(mirror, *self._lost(f"OpenCode failed for {deadline:.0f} s", exc))
            return self._wait(self._opencode_backoff, exc)
        try:
            await mirror.write_poll(messages, tail)
            # after the poll, which saw the tool call a request waits on: `waiting` never shows without it
            await self._handle_requests(tg, mirror)
            await job.prompts.step(tg, self._deps.scripts, self._lease, mirror.mirror.infos, fetched_at)
            if job.prompts.fatal:
                return await self._end(mirror, "error", job.prompts.fatal)
            if self._finished(mirror.messages):
                if tail is not None:  # decide, and archive, on the whole list: poll it at once
                    mirror.full_poll_next()
                    self._inbox.request_poll()
                    return False
                if not job.cancel and self._orphaned(mirror.messages):
                    log.warning("run_orphaned", grace_s=self._deps.orphaned_run_grace_s)
                    return await self._end(mirror, "error", ORPHANED_RUN_ERROR)
                return await self._end(mirror, *outcome(mirror.messages, job.cancel))
            if job.prompts.idle and not job.cancel and self._idle_since is not None and await self._unanswered(mirror):
                return True  # ended (a prompt left unanswered, given up)
        except Unavailable as exc:
            return self._wait(self._store_backoff, exc)
        self._store_backoff.reset()
        return False

    async def _write_pending(self, mirror: SessionMirror) -> None:
        """`waiting` while any request waits for a person, else `running`; with the requests themselves."""
        status = "waiting" if self._pending else "running"
        if self._pending.changed or mirror.writer.status != status:
            await mirror.writer.apply(self._lease, status=status, pending=self._pending.as_list())
            self._pending.changed = False

    async def _handle_requests(self, tg: TaskGroup, mirror: SessionMirror) -> None:
        """Record new requests, give OpenCode the answers people recorded, reject what waited too long. While
        PostgreSQL is down the run goes on and this is retried next tick."""
        deps, sid = self._deps, self._lease.session_id
        if deps.requests is None:
            return
        try:
            fresh = [e for e in self._pending.as_list() if e["id"] not in self._recorded]
            if fresh:
                await deps.archive.record_asked(sid, fresh)
                self._recorded |= {e["id"] for e in fresh}
            await self._job.answers.step(tg, deps.requests, self._pending, deps.archive, mirror.messages)
            if self._pending.departed:  # OpenCode stopped waiting: `gone`, unless we hold an answer for it
                departed = set(self._pending.departed)
                await deps.archive.record_gone(sid, sorted(departed))
                self._pending.departed -= departed
            if deps.pending_timeout_s is not None:

                async def submit(entry: dict[str, Any], body: dict[str, Any]) -> None:
                    await deps.archive.answer(deps.redis, sid, entry, body, TIMEOUT_BY)

                await reject_overdue(submit, self._pending, self._job.answers, deps.pending_timeout_s, self._timed_out)
        except Unavailable as exc:
            log.warning("requests_record_retry", error=exc.message)
        await self._write_pending(mirror)

    def _finished(self, messages: list[Any]) -> bool:
        # the event stream's idle report is newer than the replica's last status fetch: it decides at once
        busy = False if self._job.idle_since(self._inbox.idle_at) else self._job.busy()
        if busy is None or busy:
            self._idle_since = None
            if run_finished(messages, False):  # the run looks ended; the board was fetched before it did
                self._deps.board.wake_after_refresh(self._lease.session_id, self._inbox.request_poll)
            return False
        if self._idle_since is None:
            self._idle_since = time.monotonic()
        if self._job.cancel or not messages:
            return True  # nothing runs: a cancelled session, or one that was never prompted
        return run_finished(messages, busy) or self._orphaned(messages)

    async def _unanswered(self, mirror: SessionMirror) -> bool:
        """A prompt OpenCode stored and left unanswered, idle (poller/dropped.py): run once more, then given up."""
        idle_for_s = time.monotonic() - self._idle_since if self._idle_since is not None else 0.0
        if (error := self._dropped.given_up(mirror.messages, idle_for_s)) is not None:
            return await self._end(mirror, "error", error)
        if (prompt := self._dropped.due(mirror.messages, idle_for_s)) is None:
            return False
        try:
            await self._deps.opencode.run_again(self._lease.session_id, message_id=prompt)
        except NotFound as exc:
            if self._deps.hands_back(self._deps.server, self._lease.session_id):  # as a poll's 404 (_tick)
                raise ServerDisputed(self._deps.server, exc) from exc
            return await self._end(mirror, *self._lost("OpenCode no longer has this session", exc))
        except (Unavailable, OpenCodeError) as exc:
            refused = isinstance(exc, OpenCodeError) and not exc.retryable
            if refused or (delay := self._dropped.retry(prompt, time.monotonic())) is None:
                error = f"OpenCode did not run the prompt {prompt} again: {exc.message}"
                return await self._end(mirror, "error", error)
            self._retry_at = time.monotonic() + delay
            log.warning("run_again_retry", message_id=prompt, error=exc.message, retry_in_s=round(delay, 2))
            return False
        self._dropped.sent()
        self._idle_since = None  # busy now: the grace counts again from the next idle report
        return False

    def _orphaned(self, messages: list[Any]) -> bool:
        """OpenCode lost the run (restarted mid-run): idle past the grace period, the newest assistant message open."""
        idle_for_s = time.monotonic() - self._idle_since if self._idle_since is not None else 0.0
        return run_orphaned(messages, False, idle_for_s, self._deps.orphaned_run_grace_s)

    def _lost(self, why: str, exc: SessionLayerError) -> tuple[str, str | None]:
        """How a session ends that OpenCode can no longer run: `cancelled` when a cancel was asked, as a session
        given up on (was: `error`, the cancel a person asked for forgotten), else `error` saying why."""
        return ("cancelled", None) if self._job.cancel else ("error", f"{why}: {exc.message}")

    async def _end(self, mirror: SessionMirror, status: str, error: str | None) -> bool:
        """Archive and finish; False when new prompts arrived meanwhile (the session goes on)."""
        unsettled = self._pending.departed | {entry["id"] for entry in self._pending.as_list()}
        if self._deps.requests is not None:
            try:  # what OpenCode took, then what the run ended without (record_gone leaves answered ones be)
                await self._job.answers.record_taken(self._deps.archive)
                await self._job.answers.record_untaken(self._deps.archive)
                if unsettled:
                    await self._deps.archive.record_gone(self._lease.session_id, sorted(unsettled))
            except Unavailable as exc:  # only the outcome's label is lost (shown as unanswered); the archive goes on
                log.warning("requests_gone_unrecorded", error=exc.message)
        archived = await close_out(
            self._deps,
            self._lease,
            mirror.session,
            mirror.messages,
            status=status,
            error=error,
            final_seq=mirror.writer.seq + 1,
            prompts_rev=self._job.rev or "0",
        )
        if not archived:  # the row says it ended: running again now, or the backstop passes over it (and the
            self._job.claim_again()  # prompt that came) should Redis lose its data before the next tick
            await self._job.record_claim(mirror.session)
        return archived

    def _wait(self, backoff: Backoff, exc: Exception) -> bool:
        delay = backoff.failed(time.monotonic())
        self._retry_at = time.monotonic() + delay
        log.warning("poll_retry", error=str(exc), failures=backoff.failures, retry_in_s=round(delay, 2))
        return False
