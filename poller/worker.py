"""Worker: one replica's loops — the replica tick (claim, OpenCode status, job revisions), renew, heartbeat,
backstop — and its trackers."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import psycopg_pool
import structlog
from anyio.abc import TaskGroup
from redis.asyncio import Redis

from poller.archive import Archive
from poller.deps import TrackerDeps
from poller.events import EventRouter
from poller.failures import failing_as, run_bounded
from poller.heartbeat import HEARTBEAT_INTERVAL_S, beat
from poller.job_board import JobBoard
from poller.metrics import Metrics
from poller.places import BoardRefresher, Places, served_elsewhere, session_place
from poller.reconcile import lead_pass
from poller.request_board import RequestBoard
from poller.rewound import rebuild, went_back
from poller.server_urls import ServerUrls
from poller.status_board import StatusBoard
from poller.ticker import every
from poller.tracker import SessionTracker
from shared.clock import now_ms
from shared.config import Settings
from shared.errors import SessionLayerError, Unavailable
from shared.ids import SessionId
from shared.opencode.client import OpenCodeClient
from shared.opencode.servers import OpenCodeServers
from shared.store import keys
from shared.store.connections import store_errors
from shared.store.lease import FairShare, Lease
from shared.store.lua import Scripts

log = structlog.get_logger(__name__)

RELEASE_TIMEOUT_S = 1.5
STATUS_MAX_AGE_FACTOR = 4
CLAIM_BATCH = 50  # the least a claim takes; more only up to the replica's fair share (FairShare)
LIVE_WINDOW_S = 3 * HEARTBEAT_INTERVAL_S  # a replica counts in the fair share while its heartbeat is this recent
# Before the fair share, a replica waits to see the first heartbeat of replicas started with it (each beats as it
# starts). Short: a new replica that a rolling update starts before stopping an old one takes its sessions over.
START_GRACE_S = 1.5 * HEARTBEAT_INTERVAL_S
# Trackers loading at once, from their claim until their claim is recorded (SessionTracker's on_started). Loading
# reads the session's whole record from Redis and writes its row in PostgreSQL: 8,000 claimed at once overran both
# pools (~700 sessions handed back after "No connection available", ~3,000 claim records retried after PostgreSQL's
# pool timeout) and the event loop, so the replica's own next claim came seconds late. The bound ends before the
# first fetch from OpenCode: a hung server must not hold up the other servers' sessions.
STARTUP_CONCURRENCY = 64


@dataclass(slots=True)
class Held:
    """A lease this replica holds, the scope that stops its tracker, and until when the lease surely holds."""

    lease: Lease
    valid_until: float
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    tracker: SessionTracker | None = None
    went_back: bool = False  # Redis holds the session behind its tracker: rebuilt when the tracker has stopped


class Worker:
    """Runs until cancelled; on the way out it releases every lease so other replicas take over at once."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        pool: psycopg_pool.AsyncConnectionPool,
        opencode: OpenCodeClient,
        metrics: Metrics | None = None,
        servers: OpenCodeServers | None = None,
    ) -> None:
        """`opencode` is the default place's client (the default server, OPENCODE_DIRECTORY); sessions
        elsewhere get clients from `servers` (by default made from the settings, and closed with the worker)."""
        self._settings = settings
        self._redis = redis
        self._pool = pool
        self._scripts = Scripts(redis)
        self._board = StatusBoard(opencode, STATUS_MAX_AGE_FACTOR * settings.poll_interval_s)
        self._jobs = JobBoard(redis)
        self._requests = RequestBoard(opencode)
        self.metrics = metrics or Metrics()
        self.router = EventRouter(opencode) if settings.opencode_events else None
        self.urls = ServerUrls(settings.replica_id, settings.servers, settings.opencode_retry_deadline_s)
        self._deps = TrackerDeps(
            redis=redis,
            scripts=self._scripts,
            opencode=opencode,
            archive=Archive(pool),
            board=self._board,
            jobs=self._jobs,
            poll_interval_s=settings.poll_interval_s,
            retry_deadline_s=settings.opencode_retry_deadline_s,
            metrics=self.metrics,
            router=self.router,
            poll_interval_events_s=settings.poll_interval_events_s,
            event_coalesce_s=settings.event_coalesce_s,
            orphaned_run_grace_s=settings.orphaned_run_grace_s,
            requests=self._requests,
            pending_timeout_s=settings.pending_request_timeout_s,
            server=settings.servers[0].name,
            hands_back=self.urls.hands_back,
        )
        self._owns_servers = servers is None
        self._servers = servers or OpenCodeServers(
            settings.servers,
            timeout_s=settings.opencode_timeout_s,
            max_connections=max(10, settings.max_sessions_per_poller),
            default_directory=settings.opencode_directory,
            max_body_bytes=settings.opencode_max_response_bytes,
        )
        self.places = Places(self._servers, self._deps, settings.opencode_directory)
        self._lease_ttl_ms = int(settings.lease_ttl_s * 1000)
        self._held: dict[SessionId, Held] = {}
        self._started_ms = now_ms()
        self._started = time.monotonic()
        self._startups = anyio.Semaphore(STARTUP_CONCURRENCY)
        self.claiming = True

    @property
    def held(self) -> dict[SessionId, Held]:
        return self._held

    async def run(self) -> None:
        log.info(
            "poller_started", replica=self._settings.replica_id, max_sessions=self._settings.max_sessions_per_poller
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._replica_loop, tg)
                tg.start_soon(self._renew_loop)
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._reconcile_loop)  # the /event streams: opened by self.places with their sessions
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT_S):
                await self._release_all()
            if self._owns_servers:
                with anyio.CancelScope(shield=True):
                    await self._servers.aclose()

    async def _replica_loop(self, tg: TaskGroup) -> None:
        """Every poll interval: claim, start a refresh of OpenCode's boards (status, permission and question
        requests) of every place, which it does not wait for, and read the job revisions of every session held (new
        claims included), which the trackers read on their own ticks.

        Claiming first keeps a takeover as fast as the cadence allows, and nothing here waits on OpenCode: a slow
        or hung server holds up neither a claim nor a prompt or cancel.
        """
        boards = BoardRefresher()
        async for _ in every(self._settings.poll_interval_s):
            await self._claim(tg)
            if self._held:
                places = self.places
                boards.refresh([self._board, self._requests, *places.boards(), *places.request_boards()], tg)
                try:
                    await self._jobs.refresh(list(self._held))
                except SessionLayerError as exc:
                    log.warning("revisions_failed", error=exc.message)

    async def _claim(self, tg: TaskGroup) -> None:
        room = self._settings.max_sessions_per_poller - len(self._held)
        if not self.claiming or room <= 0 or not self.urls.checked:
            return
        started = time.monotonic()
        share = None
        if started - self._started >= START_GRACE_S:
            share = FairShare(CLAIM_BATCH, len(self._held), now_ms() - int(LIVE_WINDOW_S * 1000))
        try:
            with store_errors("Redis"):
                claimed = await self._scripts.claim(
                    self._settings.replica_id,
                    self._lease_ttl_ms,
                    room if share else min(CLAIM_BATCH, room),
                    share=share,
                )
        except SessionLayerError as exc:
            log.warning("claim_failed", error=exc.message)
            return
        for lease in claimed:
            held = Held(lease, valid_until=started + self._settings.lease_ttl_s)
            if (older := self._held.get(lease.session_id)) is not None:
                # claimed again while its tracker still runs: Redis lost the session and the backstop queued it
                # again. That tracker's lease is gone; stop it here, as the renew loop no longer sees it.
                log.info("lease_replaced", session_id=lease.session_id, epoch=lease.epoch)
                older.scope.cancel()
            self._held[lease.session_id] = held
            tg.start_soon(self._track, held, tg)
        self.metrics.sessions_held.set(len(self._held))

    async def _track(self, held: Held, tg: TaskGroup) -> None:
        """Start a claimed session's tracker: at most STARTUP_CONCURRENCY load at once, the others wait their turn
        (all counted in `poller_sessions_starting`)."""
        starting = self.metrics.sessions_starting
        starting.inc()
        try:
            await self._startups.acquire()
        except BaseException:  # cancelled while waiting (the replica stops): it never started
            starting.dec()
            raise
        loading = True

        def started() -> None:
            nonlocal loading
            if loading:
                loading = False
                self._startups.release()
                starting.dec()

        try:
            await self._start_tracking(held, tg, started)
        finally:
            started()

    async def _start_tracking(self, held: Held, tg: TaskGroup, started: Callable[[], None]) -> None:
        server: str | None = None
        try:
            server, directory = await session_place(self._redis, held.lease.session_id)
            place = self.places.key(server, directory)
        except Unavailable as exc:  # Redis down: try again later
            log.warning("place_unread", session_id=held.lease.session_id, error=exc.message)
            await self._hand_back(held)
            return
        except SessionLayerError as exc:  # a server not configured here: this session's own failure, bounded
            await self._unknown_server(held, server, exc)
            return
        max_age_s = STATUS_MAX_AGE_FACTOR * self._settings.poll_interval_s
        deps = self.places.acquire(place, tg, max_age_s=max_age_s, events=self._settings.opencode_events)
        self.metrics.server_sessions.labels(place[0]).inc()
        try:
            if self.urls.disputed(place[0]):  # its server has another URL elsewhere: ask ours has the session
                started()  # out of the startup bound first: a hung server must not hold up the other startups
                if await self.urls.lacks(deps, held.lease.session_id):
                    await self._hand_back(held)
                    return
            await self._run_tracker(held, deps, started)
        finally:
            self.metrics.server_sessions.labels(place[0]).dec()
            with anyio.CancelScope(shield=True):
                await self.places.release(place)

    async def _unknown_server(self, held: Held, server: str | None, exc: SessionLayerError) -> None:
        """Handed back uncounted while another live replica knows the server; else counted, and ended at the bound.
        Was: counted here whatever the others knew, so a replica not yet (or no longer) given a server in a rolling
        deploy ended, within a few ticks, sessions that the replicas that had it would have run."""
        try:
            since_ms = now_ms() - int(LIVE_WINDOW_S * 1000)
            replica = self._settings.replica_id
            elsewhere = server is not None and await served_elsewhere(self._redis, replica, server, since_ms)
        except Unavailable:
            elsewhere = True  # unknown for now: try again later rather than count it
        if elsewhere:
            log.info("place_elsewhere", session_id=held.lease.session_id, server=server)
            await self._hand_back(held)
            return
        log.warning("place_unknown", session_id=held.lease.session_id, error=exc.message)
        # ended without an abort: the default server's client would send it to a server without the session
        await self._bounded(held, self._deps, failing_as(exc), abort=False)

    async def _hand_back(self, held: Held) -> None:
        """Give the lease back before the tracker started: due at once, for any replica."""
        with anyio.CancelScope(shield=True):
            await self._release([held])
        if self._held.get(held.lease.session_id) is held:
            del self._held[held.lease.session_id]
            self.metrics.sessions_held.set(len(self._held))

    async def _run_tracker(self, held: Held, deps: TrackerDeps, started: Callable[[], None]) -> None:
        tracker = SessionTracker(deps, held.lease, lambda: time.monotonic() < held.valid_until, started)
        held.tracker = tracker
        try:
            await self._bounded(held, deps, tracker.run)
        finally:
            # the tracker's lease check refers to `held`: left in place, the two would form a cycle that only a
            # full collection frees, and the poller's collector never makes one (poller/main.py)
            held.tracker = None

    async def _bounded(
        self, held: Held, deps: TrackerDeps, run: Callable[[], Awaitable[bool]], *, abort: bool = True
    ) -> None:
        """`run` under the bounded failure rule; the lease handed back when it did not end the session."""
        try:
            with held.scope:  # cancelled by the renew loop when the lease is lost
                if not await run_bounded(deps, held.lease, run, self._settings.session_max_failures, abort=abort):
                    held.went_back |= held.tracker is not None and held.tracker.went_back
                    # Lost by its own account (a newer epoch, the job gone, Redis gone back: rebuilt below), or a
                    # failed attempt: the lease handed back at once (fenced: one really gone stays so).
                    if not held.went_back:
                        with anyio.CancelScope(shield=True):
                            await self._release([held])
        except Exception:
            # An outage while starting or ending (a failure of the session's own is counted by run_bounded):
            # give the lease back for another try.
            log.exception("tracker_crashed", session_id=held.lease.session_id)
            with anyio.CancelScope(shield=True):
                await self._release([held])
        # Not in a `finally`: when the replica shuts down, the cancellation skips this, and _release_all
        # still finds the lease to hand back.
        if held.went_back:
            await rebuild(self._redis, self._pool, self._scripts, held.lease)
        if self._held.get(held.lease.session_id) is held:
            del self._held[held.lease.session_id]
            self.metrics.sessions_held.set(len(self._held))

    async def _renew_loop(self) -> None:
        async for _ in every(self._settings.lease_ttl_s / 3):
            held = list(self._held.values())
            if not held:
                continue
            started = time.monotonic()
            # before the renewal reads Redis: a write landing meanwhile only puts Redis further ahead of them
            marks = [entry.tracker.marks if entry.tracker else None for entry in held]
            try:
                with store_errors("Redis"):
                    renewals = await self._scripts.renew(self._lease_ttl_ms, [h.lease for h in held])
            except SessionLayerError as exc:
                log.warning("renew_failed", error=exc.message, leases=len(held))
                self._stop_expired()
                continue
            for entry, renewed, mark in zip(held, renewals, marks, strict=True):
                if renewed is not None and went_back(renewed, mark):
                    entry.went_back = True  # its tracker's task rebuilds it once stopped (_bounded)
                    entry.scope.cancel()
                elif renewed is not None:
                    entry.valid_until = started + self._settings.lease_ttl_s
                else:
                    log.info("lease_lost", session_id=entry.lease.session_id)
                    entry.scope.cancel()

    def _stop_expired(self) -> None:
        now = time.monotonic()
        for entry in self._held.values():
            if entry.valid_until <= now:
                log.info("lease_expired", session_id=entry.lease.session_id)
                entry.scope.cancel()

    async def _heartbeat_loop(self) -> None:
        async for _ in every(HEARTBEAT_INTERVAL_S):
            try:
                await beat(
                    self._redis,
                    self._settings.replica_id,
                    started_ms=self._started_ms,
                    now_ms=now_ms(),
                    sessions=self._held,
                    max_sessions=self._settings.max_sessions_per_poller,
                    servers=self._servers.names,
                    server_urls=self.urls.mine,
                )
                await self.urls.check(self._redis, now_ms() - int(LIVE_WINDOW_S * 1000))
            except SessionLayerError as exc:
                log.warning("heartbeat_failed", error=exc.message)

    async def _reconcile_loop(self) -> None:
        interval_s = self._settings.reconcile_interval_s
        async for _ in every(interval_s):
            try:
                requeued = await lead_pass(self._redis, self._pool, self._settings.replica_id, interval_s)
                if requeued:
                    log.warning("backstop_requeued", sessions=requeued)
            except SessionLayerError as exc:
                log.warning("reconcile_failed", error=exc.message)
            except Exception:
                # A bug in a pass must not end the replica: every replica would end in turn as it took the lock.
                log.exception("reconcile_crashed")

    async def _release_all(self) -> None:
        self.claiming = False
        held = list(self._held.values())
        for entry in held:
            entry.scope.cancel()
        released = await self._release(held)
        try:
            with store_errors("Redis"):
                await self._redis.zrem(keys.POLLERS, self._settings.replica_id)
                await self._redis.delete(keys.poller(self._settings.replica_id))
        except SessionLayerError:
            pass
        log.info("poller_stopped", released=released)

    async def _release(self, held: list[Held]) -> int:
        try:
            with store_errors("Redis"):
                return await self._scripts.release([h.lease for h in held])
        except SessionLayerError as exc:
            log.warning("release_failed", error=exc.message, leases=len(held))
            return 0
