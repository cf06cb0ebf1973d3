"""Gives the answers people recorded (shared.answers) to OpenCode exactly once, and rejects requests nobody
answered within PENDING_REQUEST_TIMEOUT_MS.

An answer waits in the job hash (`answer:<request id>`) until OpenCode no longer lists its request. It is
sent only while a RequestBoard fetch that started after our last attempt still lists the request: an answer
that landed is never sent again, and one that was lost (a timeout, a crash of the replica that sent it) is
sent by whoever owns the session next. OpenCode itself refuses a second reply to the same request (404).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from anyio.abc import TaskGroup

from poller.archive import Archive
from poller.pending import PendingRequests, call_ended
from poller.request_board import RequestBoard
from shared.clock import now_ms
from shared.errors import Conflict, NotFound, OpenCodeError, Unavailable, Unreached
from shared.models import as_text
from shared.opencode.client import OpenCodeClient

log = structlog.get_logger(__name__)

ANSWER_PREFIX = "answer:"
TIMEOUT_BY = "opencode-poller"


def timeout_message(timeout_s: float) -> str:
    return (
        f"Nobody answered within {timeout_s * 1000:.0f} ms (PENDING_REQUEST_TIMEOUT_MS), so the session layer"
        " rejected the request to let the unattended run end."
    )


class AnswerDelivery:
    """Per-session: the answers recorded for its requests, and which of them OpenCode has taken."""

    def __init__(
        self, opencode: OpenCodeClient, session_id: str, lease_valid: Callable[[], bool], retry_deadline_s: float
    ) -> None:
        """`retry_deadline_s`: how long an answer may fail to reach OpenCode (5xx, unreachable) before the session
        ends in error (OPENCODE_RETRY_DEADLINE_MS)."""
        self._opencode = opencode
        self._session_id = session_id
        self._lease_valid = lease_valid
        self.answers: dict[str, dict[str, Any]] = {}
        self._done: set[str] = set()
        self._in_flight: set[str] = set()
        self._attempted_at: dict[str, float] = {}
        self._seen_at: dict[str, float] = {}  # monotonic: when this delivery first read each answer
        self._inherited: set[str] | None = None  # answers of the first read: an earlier owner may have given them
        self._taken: set[str] = set()  # OpenCode's reply endpoint accepted these: answered, whatever a list says
        self._not_found: set[str] = set()  # OpenCode answered an attempt of ours 404: it did not take that one
        self._maybe_landed: set[str] = set()  # an attempt of ours ended unknown (a timeout, a 5xx): it may have landed
        self._refused: set[str] = set()  # OpenCode will never take these answers: the run is aborted without them
        self._settled: set[str] = set()  # outcomes recorded in PostgreSQL
        self._failing_since: dict[str, float] = {}  # monotonic: the first of an answer's failed attempts in a row
        self._retry_deadline_s = retry_deadline_s
        self.fatal: str | None = None  # OpenCode will not take an answer: the session ends in error with this

    @property
    def idle(self) -> bool:
        """No recorded answer waits to be given to OpenCode or confirmed taken."""
        return all(request_id in self._done for request_id in self.answers)

    def load(self, job: Mapping[Any, Any]) -> None:
        for key, value in job.items():
            name = as_text(key)
            if name.startswith(ANSWER_PREFIX):
                request_id = name[len(ANSWER_PREFIX) :]
                self.answers[request_id] = json.loads(as_text(value))
                self._seen_at.setdefault(request_id, time.monotonic())
        if self._inherited is None:
            self._inherited = set(self.answers)

    async def step(
        self,
        tg: TaskGroup,
        board: RequestBoard,
        pending: PendingRequests,
        archive: Archive,
        messages: Sequence[Any] = (),
    ) -> None:
        """Send what OpenCode still waits for; record in PostgreSQL what it took. An answer OpenCode refuses (4xx,
        or `false`), or fails to take for the retry deadline, sets `fatal`: the run would wait on it for ever (the
        answer is recorded: nobody can answer again, nor the timeout), and resending it every tick is a loop. A
        request still listed whose tool call `messages` show ended belongs to a run that is over (OpenCode lists an
        aborted run's requests): its answer is settled `gone`, never sent (was: a replica that took the session
        over sent a refused answer again, and its refusal aborted the follow-up then running)."""
        await self.record_taken(archive)
        for request_id, body in self.answers.items():
            if request_id in self._done or request_id in self._in_flight:
                continue
            # A list fetched before the answer came may predate the request itself (its `question.asked` event
            # showed it at once): that the list lacks it says nothing. Was: taken for "answered elsewhere", recorded
            # `answered` and never sent, the run waiting for ever. A list fetched since our last attempt ended tells
            # whether it landed.
            since = self._attempted_at.get(request_id, self._seen_at.get(request_id, 0.0))
            listed = board.requests(self._session_id, since)
            if listed is None:
                continue
            request = next((r for r in listed if r["id"] == request_id), None)
            if request is None:
                await self._departed(request_id, pending, archive)
            elif call_ended(messages, request.get("tool")):  # listed still, its run over: never to be taken
                await self._settle(request_id, "gone", pending, archive)
            elif self._lease_valid():
                self._in_flight.add(request_id)
                tg.start_soon(self._send, request_id, body, pending)

    async def _departed(self, request_id: str, pending: PendingRequests, archive: Archive) -> None:
        """OpenCode no longer lists the request: `gone` when it answered 404 to every attempt of ours (answered in
        its own UI, its run aborted), else `answered` (an attempt of ours, or of the replica that owned the session
        before, may have landed). Was: `answered` after 404s too: the archive showed our answer as the one taken."""
        inherited = request_id in (self._inherited or set())
        taken = request_id not in self._not_found or request_id in self._maybe_landed or inherited
        await self._settle(request_id, "answered" if taken else "gone", pending, archive)

    async def _settle(self, request_id: str, outcome: str, pending: PendingRequests, archive: Archive) -> None:
        await archive.record_outcome(self._session_id, request_id, outcome)
        self._done.add(request_id)
        pending.forget(request_id)
        log.info("answer_delivered" if outcome == "answered" else "answer_not_taken", request_id=request_id)

    async def record_taken(self, archive: Archive) -> None:
        """Record as answered what OpenCode's reply endpoint accepted, and as `gone` what it refused. Also called
        as the session ends: a run may end right after taking the answer, before any later tick records it.

        A refused answer left without an outcome read `unanswered` in the archive for good, and counted as recorded
        but never handed over: the next answer to the request (OpenCode still lists an aborted run's request) handed
        it over again, and its refusal aborted the run of the follow-up that had brought the session back."""
        for request_id in sorted(self._taken - self._done):
            await archive.record_outcome(self._session_id, request_id, "answered")
            self._done.add(request_id)
            log.info("answer_delivered", request_id=request_id)
        for request_id in sorted(self._refused - self._settled - self._maybe_landed):  # given up on, maybe taken
            await archive.record_outcome(self._session_id, request_id, "gone")
            self._settled.add(request_id)

    async def record_untaken(self, archive: Archive) -> None:
        """As the session ends: `gone` for each recorded answer OpenCode never took and no attempt may have given
        (never sent, or only 404s): the run ended without it. Was: no outcome, shown `unanswered` for good (e.g. a
        cancel right after the answer). One still on its way, or found recorded when this replica took the session
        over (an earlier owner may have given it), stays unknown."""
        unknown = self._taken | self._maybe_landed | self._in_flight | (self._inherited or set())
        for request_id in sorted(self.answers.keys() - self._done - unknown):
            await archive.record_outcome(self._session_id, request_id, "gone")
            self._done.add(request_id)

    async def _send(self, request_id: str, body: dict[str, Any], pending: PendingRequests) -> None:
        try:
            if body.get("kind") == "permission":
                taken = await self._opencode.reply_permission(request_id, str(body["reply"]), body.get("message"))
            elif "answers" in body:
                taken = await self._opencode.reply_question(request_id, body["answers"])
            else:
                taken = await self._opencode.reject_question(request_id)
            if taken is False:
                raise OpenCodeError("OpenCode answered false", status_code=400)
            pending.forget(request_id)  # `running` again at once
            self._taken.add(request_id)
            self._failing_since.pop(request_id, None)
        except NotFound:
            self._failing_since.pop(request_id, None)  # OpenCode no longer waits on it: the next list says so
            self._not_found.add(request_id)
        except (OpenCodeError, Unavailable) as exc:
            refused = isinstance(exc, OpenCodeError) and not exc.retryable  # a 4xx: not carried out
            if not refused and not isinstance(exc, Unreached):  # it left: OpenCode may have carried it out
                self._maybe_landed.add(request_id)
            self._failed(request_id, exc)
        finally:
            self._attempted_at[request_id] = time.monotonic()
            self._in_flight.discard(request_id)

    def _failed(self, request_id: str, exc: OpenCodeError | Unavailable) -> None:
        """A refusal is final at once; a failure that may pass (5xx, unreachable) is, past the retry deadline."""
        now = time.monotonic()
        since = self._failing_since.setdefault(request_id, now)
        if isinstance(exc, OpenCodeError) and not exc.retryable:
            self.fatal = f"OpenCode refused the answer to {request_id}: {exc.message}"
            self._done.add(request_id)
            self._refused.add(request_id)
            log.warning("answer_refused", request_id=request_id, error=exc.message)
        elif now - since >= self._retry_deadline_s:
            deadline_s = self._retry_deadline_s
            self.fatal = f"OpenCode failed to take the answer to {request_id} for {deadline_s:.0f} s: {exc.message}"
            self._done.add(request_id)
            self._refused.add(request_id)
            log.warning("answer_send_gave_up", request_id=request_id, error=exc.message)
        else:
            log.warning("answer_send_failed", request_id=request_id, error=exc.message)


async def reject_overdue(
    submit: Callable[[dict[str, Any], dict[str, Any]], Any],
    pending: PendingRequests,
    answers: AnswerDelivery,
    timeout_s: float,
    tried: set[str],
) -> None:
    """Reject (through the same recorded path as a person's answer) every request older than the timeout."""
    now = now_ms()
    for entry in pending.as_list():
        request_id = entry["id"]
        if request_id in answers.answers or request_id in tried or now - entry["askedAt"] < timeout_s * 1000:
            continue
        message = timeout_message(timeout_s)
        body = {"reply": "reject", "message": message} if entry["kind"] == "permission" else {"reject": True}
        try:
            await submit(entry, body | ({"reason": message} if entry["kind"] == "question" else {}))
            log.warning("request_timed_out", request_id=request_id, timeout_s=timeout_s)
        except Conflict:
            pass  # somebody answered meanwhile
        tried.add(request_id)
