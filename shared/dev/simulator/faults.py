"""Misbehaviours a test switches on: slow answers, 500s, malformed bodies, connections dropped before or after."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal, get_args

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from shared.dev.simulator.errors import unknown_error

FaultKind = Literal["slow", "late", "error500", "reset", "reset_after", "malformed"]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Fault:
    """A misbehaviour for the requests whose path matches `path` (fnmatch, e.g. "/session/*/message").

    slow: wait `ms` before answering normally · late: take the request, then wait `ms` before carrying it out
    and answering (a client that gave up meanwhile saw a timeout for a request still done) · error500: answer 500
    UnknownError · malformed: answer 200 with a body that is not JSON · reset: drop the connection without
    answering · reset_after: handle the request, then drop the connection instead of answering. `count` requests,
    or all until cleared (None).
    """

    kind: FaultKind
    path: str = "*"
    method: str | None = None
    count: int | None = None
    ms: int = 0

    @classmethod
    def from_json(cls, body: Any) -> Fault:
        if not isinstance(body, dict) or body.get("kind") not in get_args(FaultKind):
            raise ValueError(f"a fault needs kind in {get_args(FaultKind)}, got {body!r}")
        fault = cls(**{k: v for k, v in body.items() if k in cls.__dataclass_fields__})
        if not isinstance(fault.path, str) or not isinstance(fault.ms, int) or fault.ms < 0:
            raise ValueError(f"bad fault {body!r}")
        if fault.count is not None and (not isinstance(fault.count, int) or fault.count < 1):
            raise ValueError(f"fault count must be a positive integer or null, got {fault.count!r}")
        return fault

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and fnmatchcase(path, self.path)


def take_fault(faults: list[Fault], method: str, path: str) -> Fault | None:
    """The first fault for this request, used up by one: a fault whose count reaches 0 is removed."""
    fault = next((f for f in faults if f.matches(method, path)), None)
    if fault is not None and fault.count is not None:
        fault.count -= 1
        if fault.count == 0:
            faults.remove(fault)
    return fault


async def _discard(message: Message) -> None:
    return None


async def _drop_connection(receive: Receive, send: Send) -> None:
    """Close the TCP connection without a response, so the client sees a connection error."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)  # uvicorn's RequestResponseCycle
    if transport is None:  # another server: promise a body and never send it
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
        return
    transport.close()
    with anyio.move_on_after(1):  # until uvicorn notices, so it does not answer 500 for us
        while (await receive())["type"] != "http.disconnect":
            pass


async def _taken(receive: Receive, delay_s: float = 0.0) -> Receive:
    """The request's body read now; handed over again to whoever reads it later, after the client has gone."""
    messages = [await receive()]
    while messages[-1].get("more_body"):
        messages.append(await receive())
    await anyio.sleep(delay_s)
    replay = iter(messages)

    async def replayed() -> Message:
        return next(replay, {"type": "http.disconnect"})

    return replayed


async def misbehave(fault: Fault, handle: Handler, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer the request the way `fault` says; `handle` answers it normally."""
    if fault.kind == "slow":
        await anyio.sleep(fault.ms / 1000)
        await handle(scope, receive, send)
    elif fault.kind == "late":
        await handle(
            scope, await _taken(receive, fault.ms / 1000), send
        )  # (the server drops what is sent to a client gone)
    elif fault.kind == "error500":
        await unknown_error()(scope, receive, send)
    elif fault.kind == "malformed":
        await Response(b'{"truncated": [', media_type="application/json")(scope, receive, send)
    else:
        if fault.kind == "reset_after":
            await handle(scope, receive, _discard)
        await _drop_connection(receive, send)
