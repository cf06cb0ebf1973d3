"""CommandBatch: the commands many tasks issue in one event-loop turn go to Redis together, as one pipeline.

A poller replica's trackers each await their own fenced write, so a session's writes stay in order; what batching
changes is the cost per write. redis-py's own call checks a connection out of the pool, encodes every argument in
Python and reads its reply, for each command: ~85 µs of CPU per fenced write with the arguments of a part's write.
Batched, one checkout, one send of arguments packed in C (hiredis) and one read loop serve every write of the turn:
measured in `python -m tests.perf.batch_bench`. No task runs between batches: each batch is a task of its own that
resolves every caller's reply, so nothing long-lived can die and leave writers waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError

Command = Sequence[str | bytes | int]


class CommandBatch:
    """`execute()` queues a command and awaits its reply; what was queued in one loop turn is sent at the next."""

    def __init__(self, redis: Redis) -> None:
        self._pool = redis.connection_pool
        self._queued: list[tuple[Command, asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()  # held until done: the loop keeps only weak references
        self.batches = 0
        self.commands = 0

    async def execute(self, *command: str | bytes | int) -> Any:
        """The command's reply. An error reply (e.g. NOSCRIPT) is raised to its caller only; a connection that fails
        (after the connection's retries) fails every command of the batch, as their own calls would have failed."""
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self._flush)
        reply: asyncio.Future[Any] = loop.create_future()
        self._queued.append((command, reply))
        try:
            return await reply  # a caller that is cancelled cancels its reply; the batch leaves it be
        finally:
            # an error reply raised here holds this frame in its traceback, and the frame the reply: a cycle only the
            # collector frees, which the poller runs rarely (poller/main.py)
            del reply

    def _flush(self) -> None:
        batch, self._queued = self._queued, []
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        self.batches += 1
        self.commands += len(batch)
        packed: list[bytes] = []
        sent: list[asyncio.Future[Any]] = []
        for command, reply in batch:
            try:
                packed.append(hiredis.pack_command(tuple(command)))  # type: ignore[arg-type]  # its stub: one item
            except (TypeError, ValueError) as exc:  # an argument Redis cannot take: that caller's error alone
                _settle(reply, exc)
            else:
                sent.append(reply)
        if not packed:
            return
        try:
            connection: Connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                replies = await connection.retry.call_with_retry(
                    lambda: _exchange(connection, packed), lambda _error: connection.disconnect()
                )
            finally:
                await self._pool.release(connection)
        except asyncio.CancelledError:
            for reply in sent:
                reply.cancel()
            raise
        except Exception as exc:  # the connection failed: every command of the batch failed with it
            for reply in sent:
                _settle(reply, exc)
            return
        for reply, value in zip(sent, replies, strict=True):
            _settle(reply, value)


async def _exchange(connection: Connection, packed: list[bytes]) -> list[Any]:
    """Send every command at once, then read their replies in order; an error reply is kept as the reply."""
    await connection.send_packed_command(packed)
    replies: list[Any] = []
    for _ in packed:
        try:
            replies.append(await connection.read_response())
        except ResponseError as exc:
            replies.append(exc.with_traceback(None))  # its traceback holds this frame, which holds `replies`
    return replies


def _settle(reply: asyncio.Future[Any], value: Any) -> None:
    if reply.done():  # its caller was cancelled
        return
    if isinstance(value, BaseException):
        # without the traceback, which holds the batch's frames, which hold the replies: a cycle only the collector
        # frees, and the poller runs it rarely (poller/main.py). The caller's own traceback starts where it awaits.
        reply.set_exception(value.with_traceback(None))
    else:
        reply.set_result(value)
