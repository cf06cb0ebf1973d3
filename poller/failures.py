"""The bounded failure rule: a step that keeps failing for one session ends that session, archived, alone.

A failure is anything a tracker raises that is not an outage (Redis, PostgreSQL or OpenCode unreachable,
which is retried as long as it lasts) and not a lost lease. Each one is counted in the job's Redis hash
(`failures`, `lastFailure`, `lastFailureAt`), where every replica sees it: the tracker that raised gives its
lease back, and the next claim, here or elsewhere, tries again. At SESSION_MAX_FAILURES attempts, or at the
first failure once a cancel is asked, the session ends in `error` (`cancelled`) with a message naming the cause.
Failures add up only while each follows the last within FAILURE_WINDOW_MS: a step that keeps failing does so
claim after claim, seconds apart; a chat that lives for days must not end over five unrelated slips.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from poller.closeout import STORE_BACKOFF_BASE_S, STORE_BACKOFF_CAP_S, archive_final, finish_live
from poller.deps import TrackerDeps
from shared.backoff import Backoff
from shared.errors import LeaseLost, SessionLayerError, Unavailable
from shared.models import as_text
from shared.store import keys
from shared.store.connections import store_errors
from shared.store.lease import Lease
from shared.store.live import read_record

log = structlog.get_logger(__name__)

MAX_CAUSE_CHARS = 500
FAILURE_WINDOW_MS = 3_600_000  # a failure this long after the last one counts from 1 again


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def is_outage(exc: BaseException) -> bool:
    """Every part of it is an unreachable store or OpenCode, or a lost lease: nothing to count."""
    return all(isinstance(leaf, (Unavailable, LeaseLost)) for leaf in _leaves(exc))


def describe(exc: BaseException) -> str:
    """One line naming the cause: each underlying exception's type and first line."""
    causes = []
    for leaf in _leaves(exc):
        lines = str(leaf).strip().splitlines()
        causes.append(f"{type(leaf).__name__}: {lines[0]}" if lines else type(leaf).__name__)
    text = "; ".join(causes)
    return text if len(text) <= MAX_CAUSE_CHARS else text[: MAX_CAUSE_CHARS - 1] + "…"


async def _job_fields(deps: TrackerDeps, lease: Lease) -> tuple[int, str, bool, str]:
    """failures (0 once the last is older than the window), lastFailure, cancel asked, promptsRev.

    The window is measured on Redis's clock, which count_failure.lua stamps the failures with: was this replica's,
    and one an hour ahead ran again a session already at the bound."""
    fields = ["failures", "lastFailure", "lastFailureAt", "cancel", "promptsRev"]
    with store_errors("Redis"):
        async with deps.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.job(lease.session_id), fields)
            pipe.time()
            (failures, cause, failed_at, cancel, rev), (seconds, micros) = await pipe.execute()
    count = int(failures or 0)
    if failed_at is not None and seconds * 1000 + micros // 1000 - int(failed_at) > FAILURE_WINDOW_MS:
        count = 0
    return count, as_text(cause or b""), cancel == b"1", as_text(rev or b"0")


async def abort_run(deps: TrackerDeps, lease: Lease) -> None:
    """Ask OpenCode to stop the session's run, as the session ends here."""
    try:
        await deps.opencode.abort(lease.session_id)
    except SessionLayerError as exc:  # best effort: the session ends here whatever OpenCode does
        log.warning("abort_failed", error=exc.message)


async def give_up(deps: TrackerDeps, lease: Lease, *, abort: bool = True) -> bool:
    """End the session with what Redis holds of it; False when the lease turned out lost. `abort`: ask OpenCode
    to stop the run too (not when `deps` is not the session's server: one no longer configured)."""
    try:
        await _end(deps, lease, abort=abort)
    except LeaseLost as exc:
        log.info("lease_lost", reason=exc.message)
        return False
    return True


async def _end(deps: TrackerDeps, lease: Lease, *, abort: bool) -> None:
    """When the archive itself is what fails, the row keeps the messages it had and the error says why; when
    even that is refused, only the live state is ended."""
    failures, cause, cancel, rev = await _job_fields(deps, lease)
    record = await read_record(deps.redis, lease.session_id)
    if record is None:
        raise LeaseLost("the session has no live state")
    status = "cancelled" if cancel else "error"
    error = f"gave up after {failures} failed attempt{'s' if failures != 1 else ''}: {cause}"
    log.error("session_given_up", failures=failures, cause=cause, status=status)
    if abort:
        await abort_run(deps, lease)
    backoff = Backoff(STORE_BACKOFF_BASE_S, STORE_BACKOFF_CAP_S)
    session, seq = record.state, record.state.seq + 1
    try:
        await archive_final(
            deps, lease, session, record.messages(), status=status, error=error, final_seq=seq, backoff=backoff
        )
    except (Unavailable, LeaseLost):
        raise
    except Exception as exc:
        error = f"{error}; the messages could not be archived: {describe(exc)}"
        log.error("archive_refused", error=describe(exc))
        try:
            await archive_final(deps, lease, session, None, status=status, error=error, final_seq=seq, backoff=backoff)
        except (Unavailable, LeaseLost):
            raise
        except Exception as again:
            log.error("archive_refused", error=describe(again), messages_kept=False)
    while not await finish_live(deps, lease, session, status=status, error=error, prompts_rev=rev, backoff=backoff):
        rev = (await _job_fields(deps, lease))[3]  # a prompt came meanwhile: the session ends all the same


async def run_bounded(
    deps: TrackerDeps, lease: Lease, run: Callable[[], Awaitable[bool]], max_failures: int, *, abort: bool = True
) -> bool:
    """`run` (a tracker) under the rule: True when the session ended and is archived; False when the lease is
    to be given back (lost, or a failure to try again). An outage propagates as before."""
    failures, _, cancel, _ = await _job_fields(deps, lease)
    if failures >= max_failures or (failures and cancel):
        return await give_up(deps, lease, abort=abort)  # the attempt that reached the bound did not finish giving up
    try:
        return await run()
    except Exception as exc:
        if is_outage(exc):
            raise
        cause = describe(exc)
        with store_errors("Redis"):  # counted before the (slower) traceback is logged
            failures = await deps.scripts.count_failure(lease, cause, window_ms=FAILURE_WINDOW_MS)
        log.error("session_step_failed", cause=cause, failures=failures, exc_info=exc)
        if failures < 0:
            return False
        cancel = (await _job_fields(deps, lease))[2]
        if failures < max_failures and not cancel:
            return False
        return await give_up(deps, lease, abort=abort)


def failing_as(exc: Exception) -> Callable[[], Awaitable[bool]]:
    """A step that fails as `exc` did, for the failure rule (run_bounded) to count."""

    async def run() -> bool:
        raise exc

    return run
