"""A session's job as its owner sees it: the prompts and cancel request in Redis, the claim recorded in
PostgreSQL, the prompts on their way to OpenCode, and when to abort."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from poller.answers import AnswerDelivery
from poller.deps import TrackerDeps
from poller.prompts import PromptDelivery
from shared.errors import LeaseLost, RedisWentBack, Unavailable
from shared.models import as_text
from shared.store import keys
from shared.store.connections import store_errors
from shared.store.lease import Lease
from shared.store.live import LiveState

log = structlog.get_logger(__name__)


class Job:
    """Synced every tick (`sync`, then `record_claim`) before the tracker acts on OpenCode."""

    def __init__(self, deps: TrackerDeps, lease: Lease, lease_valid: Callable[[], bool]) -> None:
        self._deps = deps
        self._lease = lease
        self.prompts = PromptDelivery(deps.opencode, lease.session_id, lease_valid, deps.retry_deadline_s)
        self.answers = AnswerDelivery(deps.opencode, lease.session_id, lease_valid, deps.retry_deadline_s)
        self.rev: str | None = None  # the promptsRev whose prompts are loaded
        self.cancel = False
        self.aborted_at: float | None = None
        self._claim_recorded = False

    async def sync(self) -> None:
        """Pick up new prompts and a cancel request, reading the job hash only when the board says it changed."""
        board_rev = self._deps.jobs.rev(self._lease.session_id)
        if board_rev is None or board_rev != self.rev:
            await self._read()
        if self.cancel:
            self.prompts.pending.clear()

    async def _read(self) -> None:
        sid = self._lease.session_id
        with store_errors("Redis"):
            job = await self._deps.redis.hgetall(keys.job(sid))  # small: a few fields and the answers
        rev, cancel = job.get(b"promptsRev"), job.get(b"cancel")
        if rev is None:
            raise LeaseLost("the job is gone")
        if self.rev is not None and _older(as_text(rev), self.rev):
            raise RedisWentBack(f"Redis holds promptsRev {as_text(rev)} after {self.rev}")
        if as_text(rev) != self.rev:
            with store_errors("Redis"):
                entries = await self._deps.redis.lrange(keys.prompts(sid), 0, -1)
            sending = job.get(b"promptSending")
            self.prompts.load(entries, as_text(sending) if sending is not None else None)
            self.answers.load(job)
            self.rev = as_text(rev)
            self._claim_recorded = False
        self.cancel = cancel == b"1"

    async def record_claim(self, session: LiveState) -> None:
        """The PostgreSQL backstop row, with the pending prompts; recorded before they are sent. While
        PostgreSQL is down polling goes on and this is retried next tick."""
        if self._claim_recorded:
            return
        records = [p.as_record() for p in self.prompts.pending]
        try:
            recorded = await self._deps.archive.record_claim(session, self._lease.epoch, records)
        except Unavailable as exc:
            log.warning("claim_record_retry", error=exc.message)
            return
        if not recorded:
            raise LeaseLost("PostgreSQL holds a newer owner's epoch")
        self._claim_recorded = True

    def claim_again(self) -> None:
        """The session goes on after all (a prompt or cancel came while archiving): record the claim again."""
        self._claim_recorded = False

    def abort_due(self) -> bool:
        """Abort once cancel is asked, and again if OpenCode is busy after our last abort: a prompt that was
        on its way when the cancel came can land after the abort and start a run."""
        if not self.cancel:
            return False
        if self.aborted_at is None:
            return True
        return bool(self._deps.board.busy(self._lease.session_id, self.aborted_at))

    async def abort(self) -> None:
        await self._deps.opencode.abort(self._lease.session_id)
        self.aborted_at = time.monotonic()
        log.info("session_aborted")

    def idle_since(self, reported_at: float | None) -> bool:
        """True when OpenCode reported the session idle (its event stream) after our last prompt or abort."""
        if reported_at is None or not self.prompts.idle:
            return False
        return reported_at > max(self.prompts.last_attempt_at or 0.0, self.aborted_at or 0.0)

    def busy(self) -> bool | None:
        """Whether OpenCode runs the session, as far as a status fetch after our last prompt or abort knows;
        None while a prompt is still to be sent or no such fetch has come back yet."""
        if not self.prompts.idle:
            return None
        since = max(self.prompts.last_attempt_at or 0.0, self.aborted_at or 0.0)
        return self._deps.board.busy(self._lease.session_id, since)


def _older(rev: str, known: str) -> bool:
    """A promptsRev below one read before: it only counts up while the job lives (send, cancel, answer)."""
    return rev.isdecimal() and known.isdecimal() and int(rev) < int(known)
