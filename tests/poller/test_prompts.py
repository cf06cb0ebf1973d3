"""PromptDelivery's timing rules, on a controlled clock, against a stub OpenCode that answers as told."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from poller import prompts
from poller.prompts import RESEND_AFTER_FAILURE_S, VISIBLE_TIMEOUT_S, PromptDelivery
from shared.dev.simulator.server import serve_in_thread
from shared.ids import SessionId
from shared.models import dumps
from shared.opencode.client import OpenCodeClient
from shared.store.lease import Lease
from shared.store.lua import Scripts

pytestmark = pytest.mark.anyio

SESSION = SessionId("ses_prompts0000000000000000")
LEASE = Lease(SESSION, "1:test", 1)


class StubOpenCode:
    """Answers prompt_async with the queued statuses (204 once they run out) and records every attempt."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.attempts: list[str] = []

    async def prompt_async(self, request: Request) -> Response:
        self.attempts.append((await request.json())["messageID"])
        status = self.answers.pop(0) if self.answers else 204
        if status == 204:
            return Response(status_code=204)
        return JSONResponse({"name": "BadRequest", "data": {"message": f"answered {status}"}}, status_code=status)


@pytest.fixture
def stub() -> StubOpenCode:
    return StubOpenCode()


@pytest.fixture
def url(stub: StubOpenCode) -> Iterator[str]:
    app = Starlette(routes=[Route("/session/{id}/prompt_async", stub.prompt_async, methods=["POST"])])
    with serve_in_thread(app) as base:
        yield base


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(prompts.time, "monotonic", fake.monotonic)
    return fake


class Harness:
    """One prompt queued; `step(fetched_at)` runs a delivery step and waits for the send it starts."""

    def __init__(
        self, opencode: OpenCodeClient, scripts: Scripts, lease_valid: bool = True, retry_deadline_s: float = 60.0
    ) -> None:
        self.scripts = scripts
        self.lease_valid = lease_valid
        self.delivery = PromptDelivery(opencode, SESSION, lambda: self.lease_valid, retry_deadline_s)
        self.delivery.load([dumps({"messageID": "msg_1", "text": "hello"})])

    async def step(self, fetched_at: float) -> None:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                # OpenCode does not show msg_1 yet: nothing to pop, so the lease is never used
                await self.delivery.step(tg, self.scripts, LEASE, known_ids=(), fetched_at=fetched_at)


@pytest.fixture
async def harness(url: str, redis: Redis) -> AsyncIterator[Harness]:
    opencode = OpenCodeClient(url, timeout_s=5)
    try:
        yield Harness(opencode, Scripts(redis))
    finally:
        await opencode.aclose()


async def test_a_sent_prompt_is_sent_again_only_when_still_invisible_after_the_timeout(
    harness: Harness, stub: StubOpenCode, clock: Clock
) -> None:
    await harness.step(fetched_at=clock.now)
    assert stub.attempts == ["msg_1"]
    sent_at = clock.now
    clock.now = sent_at + VISIBLE_TIMEOUT_S - 0.1
    await harness.step(fetched_at=clock.now)
    assert stub.attempts == ["msg_1"]  # it may simply not show yet
    clock.now = sent_at + VISIBLE_TIMEOUT_S
    await harness.step(fetched_at=clock.now)
    assert stub.attempts == ["msg_1", "msg_1"]


async def test_no_resend_on_a_list_fetched_before_the_last_attempt_ended(
    harness: Harness, stub: StubOpenCode, clock: Clock
) -> None:
    await harness.step(fetched_at=clock.now)
    attempt_ended = clock.now
    clock.now = attempt_ended + VISIBLE_TIMEOUT_S + 60
    await harness.step(fetched_at=attempt_ended)  # this list may predate the prompt landing
    assert stub.attempts == ["msg_1"]
    await harness.step(fetched_at=attempt_ended + 0.001)
    assert stub.attempts == ["msg_1", "msg_1"]


async def test_a_failed_send_is_retried_after_resend_after_failure_s(
    harness: Harness, stub: StubOpenCode, clock: Clock
) -> None:
    stub.answers = [503]
    await harness.step(fetched_at=clock.now)
    assert harness.delivery.fatal is None  # a 5xx may pass
    failed_at = clock.now
    clock.now = failed_at + RESEND_AFTER_FAILURE_S - 0.1
    await harness.step(fetched_at=clock.now)
    assert stub.attempts == ["msg_1"]  # a timed-out request may still be processed: give it time to show
    clock.now = failed_at + RESEND_AFTER_FAILURE_S
    await harness.step(fetched_at=clock.now)
    assert stub.attempts == ["msg_1", "msg_1"]
    assert harness.delivery.failed_at is None and harness.delivery.sent_at == clock.now


async def test_a_prompt_that_keeps_failing_past_the_retry_deadline_is_fatal(
    url: str, redis: Redis, stub: StubOpenCode, clock: Clock
) -> None:
    async with OpenCodeClient(url, timeout_s=5) as opencode:
        harness = Harness(opencode, Scripts(redis), retry_deadline_s=10.0)
        stub.answers = [500, 500, 500]
        await harness.step(fetched_at=clock.now)
        clock.now += 5.0
        await harness.step(fetched_at=clock.now)
        assert harness.delivery.fatal is None  # failing for 5 s: still within the deadline
        clock.now += 5.0
        await harness.step(fetched_at=clock.now)
        assert harness.delivery.fatal is not None
        assert harness.delivery.fatal.startswith("OpenCode failed the prompt msg_1 for 10 s: ")


async def test_a_refused_prompt_is_fatal(harness: Harness, stub: StubOpenCode, clock: Clock) -> None:
    stub.answers = [400]
    await harness.step(fetched_at=clock.now)
    assert harness.delivery.fatal == "OpenCode refused the prompt msg_1: " + _refusal(400)


async def test_nothing_is_sent_without_a_valid_lease(harness: Harness, stub: StubOpenCode, clock: Clock) -> None:
    harness.lease_valid = False
    await harness.step(fetched_at=clock.now)
    assert stub.attempts == []
    assert not harness.delivery.idle  # still pending, for the next owner or the next tick


def _refusal(status: int) -> str:
    return f"OpenCode answered POST /session/{SESSION}/prompt_async with {status} BadRequest: answered {status}"
