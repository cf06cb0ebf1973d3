"""Delivers a session's queued prompts to OpenCode exactly once, oldest first, without blocking the poll loop.

Each prompt carries its own `messageID`. Before any (re-)send we look for that id in a message list fetched
after the last attempt: OpenCode appends the parts of a repeated messageID to the existing message, so a
blind re-send would corrupt the transcript. A prompt leaves the Redis list only once OpenCode shows it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import structlog
from anyio.abc import TaskGroup

from shared.errors import LeaseLost, OpenCodeError, Unavailable, Unreached
from shared.opencode.client import OpenCodeClient
from shared.store.connections import store_errors
from shared.store.lease import Lease
from shared.store.lua import Scripts

log = structlog.get_logger(__name__)

# OpenCode appends the user message before answering 204, so a sent prompt shows up on the next poll; only a
# prompt still invisible after this long is sent again (its messageID makes a late duplicate detectable). A send
# that failed after it left (a timeout, a dropped connection, a 5xx a proxy may give for a request it passed on)
# may still be carried out: it gets as long to show.
VISIBLE_TIMEOUT_S = 30.0
# A send that never reached OpenCode (no connection) is tried again after this long.
RESEND_AFTER_FAILURE_S = 2.0


@dataclass(frozen=True, slots=True)
class Prompt:
    raw: str  # exactly as stored in Redis: pop_prompt compares it
    message_id: str
    text: str

    @classmethod
    def parse(cls, raw: bytes | str) -> Prompt:
        text = raw.decode() if isinstance(raw, bytes) else raw
        body = json.loads(text)
        return cls(raw=text, message_id=str(body["messageID"]), text=str(body["text"]))

    def as_record(self) -> dict[str, str]:
        return {"messageID": self.message_id, "text": self.text}


class PromptDelivery:
    """Per-session delivery state; `fatal` is set when OpenCode refuses a prompt outright, or keeps failing it
    for `retry_deadline_s` (the bound OPENCODE_RETRY_DEADLINE_MS sets on every OpenCode call of a session)."""

    def __init__(
        self,
        opencode: OpenCodeClient,
        session_id: str,
        lease_valid: Callable[[], bool],
        retry_deadline_s: float = float("inf"),
    ) -> None:
        self._opencode = opencode
        self._session_id = session_id
        self._lease_valid = lease_valid
        self._retry_deadline_s = retry_deadline_s
        self._failing_since: float | None = None
        self.pending: list[Prompt] = []
        self.in_flight = False
        self.last_attempt_at: float | None = None
        self.failed_at: float | None = None
        self.sent_at: float | None = None
        self.fatal: str | None = None

    @property
    def idle(self) -> bool:
        return not self.pending and not self.in_flight

    def load(self, entries: Sequence[bytes | str], sending: str | None = None) -> None:
        """The queued prompts; `sending` is the one an owner noted it was sending (the job's `promptSending`)."""
        self.pending = [Prompt.parse(raw) for raw in entries]
        if self.last_attempt_at is None and self.pending and self.pending[0].message_id == sending:
            # an earlier owner's send may still be carried out (it was killed, or lost its lease, mid-send): wait
            # for it to show as if this replica had sent it now. Was: sent again at once, and OpenCode ran both.
            self.sent_at = self.last_attempt_at = time.monotonic()

    async def step(
        self, tg: TaskGroup, scripts: Scripts, lease: Lease, known_ids: Collection[str], fetched_at: float
    ) -> None:
        """Drop prompts OpenCode already shows; start sending the next one if it is safe to."""
        while self.pending and self.pending[0].message_id in known_ids and not self.in_flight:
            head = self.pending.pop(0)
            with store_errors("Redis"):
                popped = await scripts.pop_prompt(lease, head.raw)
            if popped < 0:
                raise LeaseLost(f"lease lost while popping prompt {head.message_id}")
            # it landed: the failures before it count no more
            self.sent_at = self.failed_at = self._failing_since = None
            log.info("prompt_delivered", message_id=head.message_id)
        if self.pending and self._may_send(fetched_at):
            head = self.pending[0]
            with store_errors("Redis"):
                noted = await scripts.mark_sending(lease, head.message_id)  # before it leaves: see load
            if noted < 0:
                raise LeaseLost(f"lease lost before sending prompt {head.message_id}")
            self.in_flight = True
            tg.start_soon(self._send, head)

    def _may_send(self, fetched_at: float) -> bool:
        if self.in_flight or not self._lease_valid():
            return False
        if self.last_attempt_at is not None and fetched_at <= self.last_attempt_at:
            return False  # the list we hold predates the end of the last attempt: it may have landed
        if self.failed_at is not None and time.monotonic() - self.failed_at < RESEND_AFTER_FAILURE_S:
            return False
        return self.sent_at is None or time.monotonic() - self.sent_at >= VISIBLE_TIMEOUT_S

    async def _send(self, prompt: Prompt) -> None:
        try:
            await self._opencode.prompt_async(self._session_id, message_id=prompt.message_id, text=prompt.text)
            self.sent_at = time.monotonic()
            self.failed_at = self._failing_since = None
            log.debug("prompt_sent", message_id=prompt.message_id)
        except OpenCodeError as exc:
            self._failed(prompt, exc, may_have_landed=exc.retryable)
            if not exc.retryable:
                self.fatal = f"OpenCode refused the prompt {prompt.message_id}: {exc.message}"
        except Unavailable as exc:
            self._failed(prompt, exc, may_have_landed=not isinstance(exc, Unreached))
        finally:
            self.last_attempt_at = time.monotonic()
            self.in_flight = False

    def _failed(self, prompt: Prompt, exc: OpenCodeError | Unavailable, *, may_have_landed: bool) -> None:
        """Was: a send that timed out was sent again 2 s later; OpenCode, slow, carried out both (the prompt twice
        in one message, and a second run)."""
        self.failed_at = time.monotonic()
        if may_have_landed:
            self.sent_at = self.failed_at  # sent again only if still invisible after VISIBLE_TIMEOUT_S
        if self._failing_since is None:
            self._failing_since = self.failed_at
        log.warning(
            "prompt_send_failed", message_id=prompt.message_id, error=exc.message, may_have_landed=may_have_landed
        )
        if self.failed_at - self._failing_since >= self._retry_deadline_s:
            deadline = self._retry_deadline_s
            self.fatal = f"OpenCode failed the prompt {prompt.message_id} for {deadline:.0f} s: {exc.message}"
