"""Prompts OpenCode stored but left unanswered, each run once more.

OpenCode ends its loop, leaving a prompt queued behind the run stored but unanswered, after an abort (ours, when an
answer it refused would leave the run waiting for ever) and after a step stopped at a permission rejected without a
message or a dismissed question (measured on 1.18.33); a restart between storing a prompt and running it does the
same. Nothing would answer it: the session sat `running` for ever (or, after a refused answer, ended in `error` with
a follow-up a person had sent unanswered). Once OpenCode has reported the session idle for DROPPED_GRACE_S with a
prompt newest, the prompt is run once more (`OpenCodeClient.run_again`); one that stays unanswered after that for
the orphaned-run grace ends the session in `error`, never looping. Running it again that fails on the way (OpenCode
unreachable, a 5xx, a server turning the replica away) is retried with `backoff` until the retry deadline, as every
OpenCode call of a session is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from poller.completion import unanswered_prompt
from shared.backoff import Backoff

log = structlog.get_logger(__name__)

DROPPED_GRACE_S = 5.0  # idle this long with a prompt newest: no run will answer it (a busy status shows in 0.5 s)


class DroppedPrompts:
    """One session's prompts OpenCode left unanswered, and which of them were run once more."""

    def __init__(self, give_up_s: float, backoff: Backoff) -> None:
        self._give_up_s = give_up_s
        self._run_again: set[str] = set()
        self.backoff = backoff  # the attempts that failed on the way, in a row; reset once one is sent

    def due(self, messages: Sequence[Any], idle_for_s: float) -> str | None:
        """The prompt to run again now: newest, unanswered, OpenCode idle for DROPPED_GRACE_S, not run again yet."""
        prompt = unanswered_prompt(messages)
        if prompt is None or prompt in self._run_again or idle_for_s < DROPPED_GRACE_S:
            return None
        self._run_again.add(prompt)
        log.warning("prompt_left_unanswered", message_id=prompt, idle_for_s=round(idle_for_s, 1))
        return prompt

    def sent(self) -> None:
        self.backoff.reset()

    def retry(self, prompt: str, now: float) -> float | None:
        """Running it again failed on the way: due again after the delay returned, or None once the failures in a
        row have lasted the retry deadline (the session ends saying so; the polls around it may well succeed)."""
        delay = self.backoff.failed(now)
        if self.backoff.expired(now):
            return None
        self._run_again.discard(prompt)
        return delay

    def given_up(self, messages: Sequence[Any], idle_for_s: float) -> str | None:
        """The error a session ends with whose prompt, run once more, is still unanswered after `give_up_s` idle."""
        prompt = unanswered_prompt(messages)
        if prompt is None or prompt not in self._run_again or idle_for_s < self._give_up_s:
            return None
        return f"OpenCode left the prompt {prompt} unanswered, run twice"
