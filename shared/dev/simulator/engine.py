"""The simulator's state: its sessions, the events each change publishes, and one run loop per busy session.

Each session has at most one run loop, a task in the app's task group: it answers the newest user message until
none is left unanswered, one assistant message per model step, exactly as OpenCode's loop does (so prompts sent
while busy are queued, not refused). What a step contains is the script's business (shared.dev.simulator.scenarios);
the engine stores it and publishes every change as OpenCode's event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from shared.clock import now_ms
from shared.ids import new_message_id

if TYPE_CHECKING:
    from shared.dev.simulator.asks import Asks

JSON = dict[str, Any]
logger = logging.getLogger(__name__)

VERSION = "1.18.33"
PROVIDER_ID, MODEL_ID, AGENT = "fake", "fake-model", "build"
ABORTED: JSON = {"name": "MessageAbortedError", "data": {"message": "Aborted"}}
BASH_ABORTED = "(no output)\n\n<shell_metadata>\nUser aborted the command\n</shell_metadata>"
BUSY: JSON = {"type": "busy"}

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MASK48 = (1 << 48) - 1
_id_lock = threading.Lock()
_id_state = [0, 0]  # last ms, counter
_WORDS = (("brave", "calm", "lucky", "misty", "proud", "swift", "witty"), ("canyon", "comet", "harbor", "panda"))


def new_id(prefix: str, *, descending: bool = False) -> str:
    """OpenCode's id form: `prefix_` + 12 hex of (ms * 4096 + counter) + 14 base62; `ses_` ids count down."""
    with _id_lock:
        now = int(time.time() * 1000)
        if now != _id_state[0]:
            _id_state[0], _id_state[1] = now, 0
        _id_state[1] += 1
        value = (now * 0x1000 + _id_state[1]) & _MASK48
    if descending:
        value = ~value & _MASK48
    return f"{prefix}_{value:012x}" + "".join(_BASE62[b % 62] for b in os.urandom(14))


def zero_tokens() -> JSON:
    return {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}}


class EventBus:
    """Fans `GET /event` records out to bounded per-subscriber queues; a subscriber that falls behind is dropped.

    As OpenCode's instances do, a subscriber hears only its directory's sessions (`directory_of` a session id;
    records that name no session go to everyone).
    """

    def __init__(self, directory_of: Callable[[str], str | None] = lambda session_id: None) -> None:
        self._queues: dict[MemoryObjectSendStream[str], str | None] = {}
        self._directory_of = directory_of

    def subscribe(self, directory: str | None = None) -> MemoryObjectReceiveStream[str]:
        send, receive = anyio.create_memory_object_stream[str](max_buffer_size=10_000)
        self._queues[send] = directory
        return receive

    def publish(self, type_: str, properties: JSON) -> None:
        if not self._queues:
            return
        line = json.dumps({"id": new_id("evt"), "type": type_, "properties": properties}, separators=(",", ":"))
        session_id = properties.get("sessionID")
        where = self._directory_of(session_id) if isinstance(session_id, str) else None
        for queue, directory in list(self._queues.items()):
            if where is not None and directory is not None and where != directory:
                continue
            try:
                queue.send_nowait(line)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._queues.pop(queue, None)
                queue.close()

    def close(self) -> None:
        for queue in self._queues:
            queue.close()
        self._queues.clear()


@dataclass
class SimMessage:
    info: JSON
    parts: list[JSON] = field(default_factory=list)


@dataclass
class Run:
    """A session's run loop, and what an abort must finish for it."""

    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    live: dict[str, str] = field(default_factory=dict)  # part id -> text streamed so far (stored: "")
    retrying: bool = False
    error: JSON | None = None  # a model error about to be stored
    # a permission rejected without a message, a question dismissed: OpenCode ends its loop after that step, and a
    # prompt queued behind the run is left unanswered (1.18.33), as after an abort
    blocked: bool = False


@dataclass
class SimSession:
    info: JSON
    generated_title: bool
    snapshot: str
    messages: dict[str, SimMessage] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # message ids, ascending: OpenCode's order
    status: JSON | None = None  # None: idle, absent from /session/status
    run: Run | None = None

    @property
    def id(self) -> str:
        return str(self.info["id"])

    def add(self, message: SimMessage) -> None:
        self.order.append(message.info["id"])
        self.order.sort()
        self.messages[message.info["id"]] = message


# Answers one user message with assistant steps: shared.dev.simulator.scenarios.answer.
Script = Callable[["Simulation", SimSession, Run, SimMessage], Awaitable[None]]


async def resume_if_running() -> None:
    """Raise cancellation when the caller's run was aborted while it waited.

    A wait that ends in the same loop turn as the abort (its timer fired, its answer was set) resumes the script
    once more before anyio delivers the cancel; without this check that one step would overwrite the messages
    the abort had just closed (a bash part back to `running` after the abort answered)."""
    await anyio.lowlevel.checkpoint_if_cancelled()


class Simulation:
    """All sessions of one simulated server, and the run loops that answer their prompts."""

    def __init__(self, *, speed: float, directory: str, retry_delays: Iterable[float], script: Script) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.speed = speed
        self.directory = directory
        self.retry_delays = tuple(retry_delays)
        self._script = script
        self.sessions: dict[str, SimSession] = {}
        self.bus = EventBus(self.directory_of)
        from shared.dev.simulator.asks import Asks  # it builds on this module's bus and ids

        self.asks: Asks = Asks(self.bus)
        self.task_group: TaskGroup | None = None  # set by the app's lifespan

    def create_session(
        self, *, title: str | None, directory: str | None, permission: list[JSON] | None = None
    ) -> SimSession:
        now, where = now_ms(), directory or self.directory
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now / 1000)) + f".{now % 1000:03d}Z"
        info: JSON = {"id": new_id("ses", descending=True), "slug": "-".join(random.choice(w) for w in _WORDS)}
        info |= {"projectID": hashlib.sha1(where.encode()).hexdigest(), "directory": where, "path": ""}
        info |= {"cost": 0, "tokens": zero_tokens(), "title": title if title is not None else f"New session - {iso}"}
        info |= {"version": VERSION, "time": {"created": now, "updated": now}}
        if permission:
            info["permission"] = permission  # the session's own rules, after the server's (`*`: allow)
        snapshot = hashlib.sha1(f"tree {where}".encode()).hexdigest()
        sess = SimSession(info=info, generated_title=title is None, snapshot=snapshot)
        self.sessions[sess.id] = sess
        self.bus.publish("session.created", {"sessionID": sess.id, "info": info})
        return sess

    def directory_of(self, session_id: str) -> str | None:
        sess = self.sessions.get(session_id)
        return str(sess.info["directory"]) if sess is not None else None

    def statuses(self, directory: str | None = None) -> dict[str, JSON]:
        """Busy sessions; of one directory only when given (OpenCode answers per instance)."""
        return {
            sid: sess.status
            for sid, sess in self.sessions.items()
            if sess.status is not None and (directory is None or sess.info["directory"] == directory)
        }

    def prompt(self, sess: SimSession, *, message_id: str | None, parts: list[JSON], agent: str, model: JSON) -> str:
        """Store a user message (or, for a known `messageID`, its parts once more) and make sure a loop runs."""
        message_id = message_id or new_message_id()
        message = sess.messages.get(message_id)
        if message is None:
            info: JSON = {"id": message_id, "sessionID": sess.id, "role": "user", "time": {"created": now_ms()}}
            message = SimMessage(info | {"agent": agent, "model": model})
            sess.add(message)
            self.message_updated(sess, message)
        for fields in parts:
            self.add_part(sess, message, fields)
        sess.info["agent"] = agent
        sess.info["model"] = {"id": model["modelID"], "providerID": model["providerID"], "variant": "default"}
        self.session_updated(sess)
        if sess.run is None and self._unanswered(sess) is not None:
            if self.task_group is None:
                raise RuntimeError("simulator lifespan not running: serve the app with uvicorn (or run its lifespan)")
            sess.run = Run()
            self.set_status(sess, BUSY)
            self.task_group.start_soon(self._loop, sess, sess.run)
        return message_id

    def abort(self, session_id: str) -> None:
        """Stop the run at once, leaving its messages as OpenCode's abort does (synchronously)."""
        sess = self.sessions.get(session_id)
        if sess is None or sess.run is None:
            return
        run, sess.run = sess.run, None
        self.asks.drop_session(session_id)
        run.scope.cancel()
        message, now = self._open_assistant(sess), now_ms()
        if message is not None and run.retrying:  # aborted while retrying: completed, no error, no parts
            message.info["time"]["completed"] = now
            self.message_updated(sess, message)
        elif message is not None:
            error = run.error or ABORTED
            self.bus.publish("session.error", {"sessionID": sess.id, "error": error})
            self.set_status(sess, None)
            for part in message.parts:
                self._end_part(sess, run, part, now)
            message.info["error"] = error
            message.info["time"]["completed"] = now
            self.message_updated(sess, message)
        self.set_status(sess, None)
        run.done.set()

    def reset(self) -> None:
        """Stop every run and forget every session."""
        for session_id in list(self.sessions):
            self.abort(session_id)
        self.sessions.clear()
        self.asks.clear()

    def close(self) -> None:
        """Stop every run and end every event stream (server shutdown)."""
        for session_id in list(self.sessions):
            self.abort(session_id)
        self.bus.close()

    # -- the run loop ---------------------------------------------------------------------------------------

    async def _loop(self, sess: SimSession, run: Run) -> None:
        with run.scope:
            try:
                while not run.blocked and (user := self._unanswered(sess)) is not None:
                    await self._script(self, sess, run, user)
            except Exception:  # a bug in one script must not take the whole server down
                logger.exception("simulated run of %s failed", sess.id)
            sess.run = None
            self.set_status(sess, None)
            run.done.set()

    def _unanswered(self, sess: SimSession) -> SimMessage | None:
        """The newest user message, unless a finished assistant step (finish != tool-calls) answers it."""
        users = (sess.messages[i] for i in reversed(sess.order) if sess.messages[i].info["role"] == "user")
        if (user := next(users, None)) is None:
            return None
        answers = (m.info for m in sess.messages.values() if m.info.get("parentID") == user.info["id"])
        final = any("completed" in info["time"] and info.get("finish") != "tool-calls" for info in answers)
        return None if final else user

    def _open_assistant(self, sess: SimSession) -> SimMessage | None:
        for message_id in reversed(sess.order):
            message = sess.messages[message_id]
            if message.info["role"] == "assistant":
                return None if "completed" in message.info["time"] else message
        return None

    def _end_part(self, sess: SimSession, run: Run, part: JSON, now: int) -> None:
        if part["type"] in ("text", "reasoning") and "end" not in part.get("time", {"end": 0}):
            part["text"] = run.live.get(part["id"], part["text"])
            part["time"]["end"] = now
        elif part["type"] == "tool" and part["state"]["status"] in ("pending", "running"):
            state = part["state"]
            ended = {"input": state["input"], "time": {"start": state.get("time", {}).get("start", now), "end": now}}
            if state["status"] == "running" and part["tool"] == "bash":  # bash ends itself: completed
                metadata = {"output": BASH_ABORTED, "exit": None, "truncated": False}
                title = str(state["input"].get("command", ""))
                done = {"status": "completed", "output": BASH_ABORTED, "title": title, "metadata": metadata}
                part["state"] = done | ended
            else:
                part["state"] = {"status": "error", "error": "Tool execution aborted"} | ended
        else:
            return
        self.part_updated(sess, part)

    def add_part(self, sess: SimSession, message: SimMessage, fields: JSON) -> JSON:
        part = {"id": new_id("prt"), "sessionID": sess.id, "messageID": message.info["id"]} | fields
        message.parts.append(part)
        self.part_updated(sess, part)
        return part

    def set_tool(self, sess: SimSession, part: JSON, state: JSON) -> None:
        part["state"] = state
        self.part_updated(sess, part)

    def part_updated(self, sess: SimSession, part: JSON) -> None:
        self.bus.publish("message.part.updated", {"sessionID": sess.id, "part": part, "time": now_ms()})

    def message_updated(self, sess: SimSession, message: SimMessage) -> None:
        self.bus.publish("message.updated", {"sessionID": sess.id, "info": message.info})

    def session_updated(self, sess: SimSession) -> None:
        sess.info["time"]["updated"] = now_ms()
        self.bus.publish("session.updated", {"sessionID": sess.id, "info": sess.info})

    def set_status(self, sess: SimSession, status: JSON | None) -> None:
        sess.status = status
        self.bus.publish("session.status", {"sessionID": sess.id, "status": status or {"type": "idle"}})
        if status is None:
            self.bus.publish("session.idle", {"sessionID": sess.id})

    def later(self, seconds: float, publish: Callable[[], None]) -> None:
        async def later() -> None:
            await self.sleep(seconds)
            publish()

        if self.task_group is not None:
            self.task_group.start_soon(later)

    async def sleep(self, seconds: float) -> None:
        """Wait; never return into a run that was aborted meanwhile (see `resume_if_running`)."""
        await anyio.sleep(seconds / self.speed)
        await resume_if_running()
