"""Redis that went back: restarted from its append-only file or a snapshot, or failed over to a replica that lagged.

Every key is still there but the last writes are not, and nothing else tells: the lease holds, the job is there, so
no tracker stops and the backstop (which looks for sessions without a job) passes over them. The owner's later
writes would go on from its own memory: what Redis lost of the live state stayed lost until the session ended, its
seq ran again over numbers clients had seen (a stream drops an event at or below the seq it holds, so those were
skipped), and a follow-up queued in the lost second was gone from the job.

Each lease renewal (renew.lua) says how far Redis holds the session, as each write and job read of its owner does
(RedisWentBack); an owner whose writes or job reads went further drops the session (drop.lua, fenced by its lease)
and queues it again from its row as the backstop does a session Redis lost (reconcile.requeue_gone): from seq and
epoch floors past the lost run's, with every prompt and answer the row records, and a `reset` that sends every
client a fresh snapshot. What the dropped job held that the row may not goes with it: a follow-up still queued whose
record had not committed, and the `promptSending` mark of a prompt its owner was sending, so that the next owner
waits to see it before sending it again. The next owner rewrites from OpenCode what the rebuilt state lacks, as
after any takeover.
"""

from __future__ import annotations

import anyio
import psycopg_pool
import structlog
from redis.asyncio import Redis

from poller.reconcile import requeue_gone
from shared.errors import SessionLayerError
from shared.store.connections import store_errors
from shared.store.lease import Lease
from shared.store.lua import Renewed, Scripts
from shared.store.queueable import Carried

log = structlog.get_logger(__name__)


def went_back(held: Renewed, marks: tuple[int, int] | None) -> bool:
    """Redis holds the session behind its owner: a lower seq than the owner's last write, or an older promptsRev
    than the owner read. A field Redis no longer holds at all is another failure (the job gone: the backstop's)."""
    if marks is None:
        return False
    seq, prompts_rev = marks
    behind_seq = held.seq is not None and held.seq < seq
    behind_rev = held.prompts_rev is not None and held.prompts_rev < prompts_rev
    return behind_seq or behind_rev


async def rebuild(redis: Redis, pool: psycopg_pool.AsyncConnectionPool, scripts: Scripts, lease: Lease) -> None:
    """Drop the session and queue it again from its row. Should Redis fail before the drop, the lease runs out and
    the next owner takes the session as Redis holds it (rewritten from OpenCode, as after any takeover); should
    PostgreSQL fail after it, the backstop queues the dropped session."""
    sid = lease.session_id
    log.warning("redis_went_back", session_id=sid)
    with anyio.CancelScope(shield=True):
        try:
            with store_errors("Redis"):
                held = await scripts.drop(lease)
            if held is None:
                return  # no longer ours: its new owner loaded what Redis holds
            sending, prompts = held
            await requeue_gone(redis, pool, [sid], {sid: Carried(prompts, sending)})
        except SessionLayerError as exc:
            log.warning("rebuild_left_to_backstop", session_id=sid, error=exc.message)
        except Exception:  # a bug here must not end the replica: the backstop queues a dropped session later
            log.exception("rebuild_crashed", session_id=sid)
