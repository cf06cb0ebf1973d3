"""PromptDelivery's timing rules, on a controlled clock, against a stub OpenCode that answers as told."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace

import anyio
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from poller import prompts
from poller.prompts import RESEND_AFTER_FAILURE_S, VISIBLE_TIMEOUT_S, PromptDelivery
from shared.dev.processes import free_port
from shared.dev.simulator.server import serve_in_thread
from shared.errors import LeaseLost
from shared.ids import SessionId
from shared.models import dumps
from shared.opencode.client import OpenCodeClient
from shared.store import keys
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
        self.slow_s = 0.0  # answers after this long (the harness's client gives up after CLIENT_TIMEOUT_S)

    async def prompt_async(self, request: Request) -> Response:
        self.attempts.append((await request.json())["messageID"])
        await anyio.sleep(self.slow_s)
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
    monkeypatch.setattr(prompts, "time", SimpleNamespace(monotonic=fake.monotonic))  # not the event loop's clock
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


CLIENT_TIMEOUT_S = 0.5


async def held(redis: Redis) -> Scripts:
    """LEASE as the session's current lease, over its job: what the fenced scripts check."""
    await redis.set(keys.lease(SESSION), LEASE.token)
    await redis.hset(keys.job(SESSION), "promptsRev", 0)
    return Scripts(redis)


@pytest.fixture
async def harness(url: str, redis: Redis) -> AsyncIterator[Harness]:
    opencode = OpenCodeClient(url, timeout_s=CLIENT_TIMEOUT_S)
    try:
        yield Harness(opencode, await held(redis))
    finally:
        await opencode.aclose()


@pytest.fixture
async def unreachable(redis: Redis) -> AsyncIterator[Harness]:
    """A harness whose OpenCode refuses connections: no send ever leaves."""
    opencode = OpenCodeClient(f"http://127.0.0.1:{free_port()}", timeout_s=CLIENT_TIMEOUT_S)
    try:
        yield Harness(opencode, await held(redis))
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


async def test_a_send_that_never_left_is_tried_again_after_resend_after_failure_s(
    unreachable: Harness, clock: Clock
) -> None:
    delivery = unreachable.delivery
    await unreachable.step(fetched_at=clock.now)
    failed_at = delivery.last_attempt_at
    assert delivery.fatal is None and failed_at == clock.now and delivery.sent_at is None
    clock.now = failed_at + RESEND_AFTER_FAILURE_S - 0.1
    await unreachable.step(fetched_at=clock.now)
    assert delivery.last_attempt_at == failed_at  # not yet
    clock.now = failed_at + RESEND_AFTER_FAILURE_S
    await unreachable.step(fetched_at=clock.now)
    assert delivery.last_attempt_at == clock.now  # tried again


@pytest.mark.parametrize("failure", ["5xx", "timeout"])
async def test_a_send_that_may_have_been_carried_out_is_sent_again_only_when_still_invisible_after_the_timeout(
    harness: Harness, stub: StubOpenCode, clock: Clock, failure: str
) -> None:
    """Was: sent again 2 s after a timeout; a slow OpenCode carried out both (the prompt twice, two runs)."""
    if failure == "5xx":
        stub.answers = [503]  # a proxy's answer for a request it may have passed on
    else:
        stub.slow_s = CLIENT_TIMEOUT_S * 2
    await harness.step(fetched_at=clock.now)
    assert harness.delivery.fatal is None  # either may pass
    failed_at = clock.now
    stub.slow_s = 0.0
    for later in (RESEND_AFTER_FAILURE_S, VISIBLE_TIMEOUT_S - 0.1):
        clock.now = failed_at + later
        await harness.step(fetched_at=clock.now)
        assert stub.attempts == ["msg_1"]  # it may still show
    clock.now = failed_at + VISIBLE_TIMEOUT_S
    await harness.step(fetched_at=clock.now)
    assert stub.attempts == ["msg_1", "msg_1"]
    assert harness.delivery.failed_at is None and harness.delivery.sent_at == clock.now


async def test_a_prompt_that_keeps_failing_past_the_retry_deadline_is_fatal(
    url: str, redis: Redis, stub: StubOpenCode, clock: Clock
) -> None:
    async with OpenCodeClient(url, timeout_s=5) as opencode:
        harness = Harness(opencode, await held(redis), retry_deadline_s=60.0)
        stub.answers = [500, 500, 500]
        await harness.step(fetched_at=clock.now)
        clock.now += VISIBLE_TIMEOUT_S
        await harness.step(fetched_at=clock.now)
        assert harness.delivery.fatal is None  # failing for 30 s: still within the deadline
        clock.now += VISIBLE_TIMEOUT_S
        await harness.step(fetched_at=clock.now)
        assert harness.delivery.fatal is not None
        assert harness.delivery.fatal.startswith("OpenCode failed the prompt msg_1 for 60 s: ")


async def test_a_prompt_that_shows_after_a_failed_send_leaves_no_failure_behind(
    harness: Harness, stub: StubOpenCode, clock: Clock
) -> None:
    """Was: the failure stayed counted: the next prompt's first failure, an hour later, was past the deadline."""
    delivery = harness.delivery
    stub.answers = [503]
    await harness.step(fetched_at=clock.now)
    clock.now += 1
    async with anyio.create_task_group() as tg:  # it landed after all
        await delivery.step(tg, harness.scripts, LEASE, known_ids={"msg_1"}, fetched_at=clock.now)
    assert delivery.idle
    delivery.load([dumps({"messageID": "msg_2", "text": "later"})])
    stub.answers = [503]
    clock.now += 3600
    await harness.step(fetched_at=clock.now)
    assert stub.attempts == ["msg_1", "msg_2"] and delivery.fatal is None  # its first failure: within the deadline


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


async def test_a_prompt_about_to_be_sent_is_noted_in_the_job_first(
    harness: Harness, stub: StubOpenCode, clock: Clock, redis: Redis
) -> None:
    await harness.step(fetched_at=clock.now)
    assert stub.attempts == ["msg_1"]
    assert await redis.hget(keys.job(SESSION), "promptSending") == b"msg_1"


async def test_no_send_once_the_lease_is_gone_from_redis(
    harness: Harness, stub: StubOpenCode, clock: Clock, redis: Redis
) -> None:
    await redis.delete(keys.lease(SESSION))  # another replica holds it now (the local clock said still valid)
    with pytest.RaisesGroup(LeaseLost):  # out of the step's task group
        await harness.step(fetched_at=clock.now)
    assert stub.attempts == []


async def test_a_new_owner_waits_for_a_prompt_an_earlier_owner_was_sending(
    harness: Harness, stub: StubOpenCode, clock: Clock
) -> None:
    """Was: the replica that took over sent it at once; OpenCode carried out the killed owner's send too."""
    taken_over_at = clock.now
    harness.delivery.load([dumps({"messageID": "msg_1", "text": "hello"})], sending="msg_1")
    for later in (0.001, VISIBLE_TIMEOUT_S - 0.1):
        clock.now = taken_over_at + later
        await harness.step(fetched_at=clock.now)
        assert stub.attempts == []  # it may still show
    clock.now = taken_over_at + VISIBLE_TIMEOUT_S
    await harness.step(fetched_at=clock.now)
    assert stub.attempts == ["msg_1"]


async def test_a_note_of_another_prompt_or_of_this_replicas_own_send_changes_nothing(
    harness: Harness, stub: StubOpenCode, clock: Clock
) -> None:
    harness.delivery.load([dumps({"messageID": "msg_1", "text": "hello"})], sending="msg_0")  # delivered before
    await harness.step(fetched_at=clock.now)
    assert stub.attempts == ["msg_1"]
    clock.now += VISIBLE_TIMEOUT_S
    harness.delivery.load([dumps({"messageID": "msg_1", "text": "hello"})], sending="msg_1")  # its own note
    await harness.step(fetched_at=clock.now)
    assert stub.attempts == ["msg_1", "msg_1"]  # by its own timing: still unseen after VISIBLE_TIMEOUT_S
