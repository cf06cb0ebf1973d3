"""`EventStreamResponse`: starlette's StreamingResponse for SSE, without a reference cycle per closed stream.

Starlette runs the body in a task of an anyio task group and cancels that task when the client disconnects.
anyio keeps the cancellation in a local of its task-done callback, and the exception's traceback holds that
callback's frame and every frame of the body (the subscription, its queue, the request): a cycle that only a
full collection frees. The gateway's collector thresholds make full collections rare (gateway/main.py), so
every closed stream stayed in memory, ~185 objects each (the OpenCode simulator's `/event` uses it too). Here the
body runs in the request's own task under a cancel scope, and a plain asyncio task that waits for the disconnect
cancels that scope; what a cancellation raises is then handled in the frame that owns it, and freed by reference
count.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.CancelScope() as body:
            listener = asyncio.ensure_future(_disconnected(receive))

            def stop_body(_: asyncio.Future[Any]) -> None:
                body.cancel()

            listener.add_done_callback(stop_body)
            try:
                await self.stream_response(send)
            except OSError as exc:  # ASGI 2.4 servers report a gone client here
                raise ClientDisconnect() from exc
            finally:
                listener.remove_done_callback(stop_body)
                listener.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
