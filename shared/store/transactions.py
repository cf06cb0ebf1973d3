"""The Python API's PostgreSQL writes commit on their own, whatever mode the caller's connection is in.

A caller may hand enqueue/send/cancel/reply/answer a psycopg connection with autocommit on (what the CLI uses) or off
(psycopg's default). Off, a plain execute() opens a transaction that stays uncommitted until the caller commits:
the row is invisible to the pollers, which then see a job in Redis without its row. So every write runs in a
transaction() block of its own, which commits at the end in either mode. A connection that already has a
transaction in progress is refused rather than committed: committing would commit the caller's own pending work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from shared.errors import InvalidInput
from shared.store.connections import store_errors


@asynccontextmanager
async def committed(db: psycopg.AsyncConnection[Any], *, reads_only: bool = False) -> AsyncIterator[None]:
    """Run the block in a transaction of its own, committed when it ends (rolled back when it raises).

    reads_only: nothing to commit, so an autocommit connection runs the block as it is and a caller's open
    transaction is read in and left as it was; only an idle non-autocommit connection gets a (committed) block,
    so no read leaves a transaction open behind the caller's back.
    """
    idle = db.info.transaction_status == TransactionStatus.IDLE
    if reads_only and (db.autocommit or not idle):
        yield
        return
    if not db.autocommit and not idle:
        raise InvalidInput(
            "the PostgreSQL connection has a transaction in progress: commit or roll it back before calling"
            " enqueue/send/cancel/reply/answer (or pass a connection with autocommit=True)"
        )
    with store_errors("PostgreSQL"):
        async with db.transaction():
            yield
