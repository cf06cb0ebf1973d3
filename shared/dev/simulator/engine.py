"""The simulator's sessions, and the scripted runs that fill them the way OpenCode 1.18.33 does.

A prompt's keywords pick the script, like the scripted model of the real-server tests
(`tests/realopencode/scripted_model.py`; first match wins): FAIL (retries, then APIError 500), REJECT
(APIError 400 at once), TOOLERR / READ / TOOL (a tool step, then a text step: `read` of a missing file, `read`
of `hello.txt` in the session's directory, or `bash`), SLOW (slow text), ECHO or anything else ("ECHO:
<prompt>"); THINK adds a reasoning part. Every delay is divided by `speed`. Each session has at most one run
loop, a task in the app's task group: it answers the newest user message until none is left unanswered, one
assistant message per model step, exactly as OpenCode's loop does (so prompts sent while busy are queued, not
refused). `tests/realopencode/test_fidelity.py` checks all this against recordings of the real server.
"""

from __future__ import annotations

import email.utils
import hashlib
import itertools
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from shared.ids import new_message_id

JSON = dict[str, Any]
logger = logging.getLogger(__name__)

VERSION = "1.18.33"
PROVIDER_ID, MODEL_ID, AGENT = "fake", "fake-model", "build"
GENERATED_TITLE = "Scripted test session"
REASONING = "Thinking about the request step by step."
ABORTED: JSON = {"name": "MessageAbortedError", "data": {"message": "Aborted"}}
BASH_ABORTED = "(no output)\n\n<shell_metadata>\nUser aborted the command\n</shell_metadata>"
MODEL_URL = "http://127.0.0.1:8000/v1/chat/completions"
READ_FILE, MISSING_FILE = "hello.txt", "does-not-exist.txt"  # what READ and TOOLERR ask the `read` tool for
BUSY: JSON = {"type": "busy"}
# OpenCode retries a 5xx after ~2, 4, 8, 16, 30 s; a hundredth of that keeps a FAIL run short.
DEFAULT_RETRY_DELAYS = (0.02, 0.04, 0.08, 0.16, 0.3)

# Delays in seconds at speed 1, near the captured run (a TOOL run takes ~0.6 s, a SLOW text ~5 s).
ASSISTANT_S = 0.02  # prompt or previous step -> new assistant message
FIRST_TOKEN_S = 0.06  # assistant message -> step-start
CHUNK_S, SLOW_CHUNK_S, REASONING_CHUNK_S = 0.02, 0.5, 0.05  # after each streamed delta
ARGS_S, SLOW_ARGS_S = 0.15, 1.2  # tool part `pending` while its arguments stream
BASH_S, SLOW_BASH_S = 0.1, 4.0  # `echo hello` / `sleep 4; echo hello` running
STEP_END_S = 0.02  # step-finish stored -> info.finish -> info.time.completed
STEP_SUMMARY_S = 0.05  # a step's end -> the prompt's message stored again with its diff summary
READ_S = 0.004
REJECT_S = 0.08
ERROR_WINDOW_S = 0.02  # session idle before the failed message is final

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MASK48 = (1 << 48) - 1
_id_lock = threading.Lock()
_id_state = [0, 0]  # last ms, counter
_call_ids = itertools.count(1)
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


def now_ms() -> int:
    return int(time.time() * 1000)


def _zero_tokens() -> JSON:
    return {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}}


def _step_tokens() -> JSON:
    return {"total": 120, "input": 100, "output": 20, "reasoning": 0, "cache": {"read": 0, "write": 0}}


def _chunks(text: str, n: int) -> list[str]:
    n = max(1, min(n, len(text)))
    size, rest = divmod(len(text), n)
    bounds = list(itertools.accumulate([0] + [size + (i < rest) for i in range(n)]))
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def _api_error(retryable: bool) -> JSON:
    word, status, kind = ("failure", 500, "server_error") if retryable else ("rejection", 400, "invalid_request_error")
    message = f"Scripted {word} (prompt contained {'FAIL' if retryable else 'REJECT'})"
    body = json.dumps({"error": {"message": message, "type": kind, "code": f"scripted_{word}"}})
    headers = {"content-length": str(len(body)), "content-type": "application/json"}
    headers |= {"date": email.utils.formatdate(usegmt=True), "server": "fake-llm/1.0"}
    data = {"message": message, "statusCode": status, "isRetryable": retryable, "responseHeaders": headers}
    return {"name": "APIError", "data": data | {"responseBody": body, "metadata": {"url": MODEL_URL}}}


def read_file(directory: str, file_path: str) -> JSON:
    """The end state of OpenCode's `read` tool (without input and time): `completed` with the numbered lines,
    or `error` when there is no such file. A relative path is taken from the session's directory."""
    path = os.path.join(directory, file_path)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return {"status": "error", "error": f"File not found: {path}"}
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    numbered = "\n".join(f"{i}: {line}" for i, line in enumerate(lines, 1))
    output = f"<path>{path}</path>\n<type>file</type>\n<content>\n{numbered}\n\n"
    output += f"(End of file - total {len(lines)} lines)\n</content>"
    shown = "\n".join(lines)
    display = {"type": "file", "path": path, "text": shown, "lineStart": 1, "lineEnd": len(lines)}
    display |= {"totalLines": len(lines), "truncated": False}
    metadata = {"preview": "\n".join(lines[:20]), "truncated": False, "loaded": [], "display": display}
    return {"status": "completed", "output": output, "title": os.path.relpath(path, directory), "metadata": metadata}


class EventBus:
    """Fans `GET /event` records out to bounded per-subscriber queues; a subscriber that falls behind is dropped."""

    def __init__(self) -> None:
        self._queues: set[MemoryObjectSendStream[str]] = set()

    def subscribe(self) -> MemoryObjectReceiveStream[str]:
        send, receive = anyio.create_memory_object_stream[str](max_buffer_size=10_000)
        self._queues.add(send)
        return receive

    def publish(self, type_: str, properties: JSON) -> None:
        if not self._queues:
            return
        line = json.dumps({"id": new_id("evt"), "type": type_, "properties": properties}, separators=(",", ":"))
        for queue in list(self._queues):
            try:
                queue.send_nowait(line)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._queues.discard(queue)
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


class Simulation:
    """All sessions of one simulated server, and the run loops that answer their prompts."""

    def __init__(self, *, speed: float, directory: str, retry_delays: Iterable[float]) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.speed = speed
        self.directory = directory
        self.retry_delays = tuple(retry_delays)
        self.sessions: dict[str, SimSession] = {}
        self.bus = EventBus()
        self.task_group: TaskGroup | None = None  # set by the app's lifespan

    def create_session(self, *, title: str | None, directory: str | None) -> SimSession:
        now, where = now_ms(), directory or self.directory
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now / 1000)) + f".{now % 1000:03d}Z"
        info: JSON = {"id": new_id("ses", descending=True), "slug": "-".join(random.choice(w) for w in _WORDS)}
        info |= {"projectID": hashlib.sha1(where.encode()).hexdigest(), "directory": where, "path": ""}
        info |= {"cost": 0, "tokens": _zero_tokens(), "title": title if title is not None else f"New session - {iso}"}
        info |= {"version": VERSION, "time": {"created": now, "updated": now}}
        snapshot = hashlib.sha1(f"tree {where}".encode()).hexdigest()
        sess = SimSession(info=info, generated_title=title is None, snapshot=snapshot)
        self.sessions[sess.id] = sess
        self.bus.publish("session.created", {"sessionID": sess.id, "info": info})
        return sess

    def statuses(self) -> dict[str, JSON]:
        return {sid: sess.status for sid, sess in self.sessions.items() if sess.status is not None}

    def prompt(self, sess: SimSession, *, message_id: str | None, parts: list[JSON], agent: str, model: JSON) -> str:
        """Store a user message (or, for a known `messageID`, its parts once more) and make sure a loop runs."""
        message_id = message_id or new_message_id()
        message = sess.messages.get(message_id)
        if message is None:
            info: JSON = {"id": message_id, "sessionID": sess.id, "role": "user", "time": {"created": now_ms()}}
            message = SimMessage(info | {"agent": agent, "model": model})
            sess.add(message)
            self._message_updated(sess, message)
        for fields in parts:
            self._add_part(sess, message, fields)
        sess.info["agent"] = agent
        sess.info["model"] = {"id": model["modelID"], "providerID": model["providerID"], "variant": "default"}
        self._session_updated(sess)
        if sess.run is None and self._unanswered(sess) is not None:
            if self.task_group is None:
                raise RuntimeError("simulator lifespan not running: serve the app with uvicorn (or run its lifespan)")
            sess.run = Run()
            self._set_status(sess, BUSY)
            self.task_group.start_soon(self._loop, sess, sess.run)
        return message_id

    def abort(self, session_id: str) -> None:
        """Stop the run at once, leaving its messages as OpenCode's abort does (synchronously)."""
        sess = self.sessions.get(session_id)
        if sess is None or sess.run is None:
            return
        run, sess.run = sess.run, None
        run.scope.cancel()
        message, now = self._open_assistant(sess), now_ms()
        if message is not None and run.retrying:  # aborted while retrying: completed, no error, no parts
            message.info["time"]["completed"] = now
            self._message_updated(sess, message)
        elif message is not None:
            error = run.error or ABORTED
            self.bus.publish("session.error", {"sessionID": sess.id, "error": error})
            self._set_status(sess, None)
            for part in message.parts:
                self._end_part(sess, run, part, now)
            message.info["error"] = error
            message.info["time"]["completed"] = now
            self._message_updated(sess, message)
        self._set_status(sess, None)
        run.done.set()

    def reset(self) -> None:
        """Stop every run and forget every session."""
        for session_id in list(self.sessions):
            self.abort(session_id)
        self.sessions.clear()

    def close(self) -> None:
        """Stop every run and end every event stream (server shutdown)."""
        for session_id in list(self.sessions):
            self.abort(session_id)
        self.bus.close()

    # -- the run loop ---------------------------------------------------------------------------------------

    async def _loop(self, sess: SimSession, run: Run) -> None:
        with run.scope:
            try:
                while (user := self._unanswered(sess)) is not None:
                    await self._answer(sess, run, user)
            except Exception:  # a bug in one script must not take the whole server down
                logger.exception("simulated run of %s failed", sess.id)
            sess.run = None
            self._set_status(sess, None)
            run.done.set()

    async def _answer(self, sess: SimSession, run: Run, user: SimMessage) -> None:
        prompt = "\n".join(p.get("text", "") for p in user.parts if p["type"] == "text").strip()
        slow = "SLOW" in prompt
        reasoning = REASONING if "THINK" in prompt else None
        if "FAIL" in prompt or "REJECT" in prompt:
            await self._model_error(sess, run, user, retryable="FAIL" in prompt)
        elif "TOOL" in prompt or "READ" in prompt:
            if "TOOLERR" in prompt:
                tool, args = "read", {"filePath": MISSING_FILE}
            elif "READ" in prompt:
                tool, args = "read", {"filePath": READ_FILE}
            else:
                tool, args = "bash", {"command": "sleep 4; echo hello" if slow else "echo hello"}
            output = await self._tool_step(sess, run, user, tool, args, slow=slow, reasoning=reasoning)
            await self._text_step(sess, run, user, f"The tool ran. Output: {output.strip()[:200]}", slow=slow)
        elif slow:
            await self._text_step(sess, run, user, f"Slow answer to: {prompt[:200]}", slow=True, reasoning=reasoning)
        else:
            await self._text_step(sess, run, user, f"ECHO: {prompt[:500]}", slow=False, reasoning=reasoning)

    async def _open_step(self, sess: SimSession, user: SimMessage) -> SimMessage:
        await self._sleep(ASSISTANT_S)
        agent, model, cwd = user.info["agent"], user.info["model"], sess.info["directory"]
        info: JSON = {"id": new_message_id(), "sessionID": sess.id, "role": "assistant", "time": {"created": now_ms()}}
        info |= {"parentID": user.info["id"], "modelID": model["modelID"], "providerID": model["providerID"]}
        info |= {"mode": agent, "agent": agent, "path": {"cwd": cwd, "root": cwd}, "cost": 0, "tokens": _zero_tokens()}
        message = SimMessage(info)
        sess.add(message)
        self._message_updated(sess, message)
        if "summary" not in user.info:
            user.info["summary"] = {"diffs": []}
            self._message_updated(sess, user)
        self._set_status(sess, BUSY)  # OpenCode marks the session busy again once the step's message exists
        await self._sleep(FIRST_TOKEN_S)
        if "summary" not in sess.info:  # the first run: OpenCode generates the title, sums up the diff
            if sess.generated_title:
                sess.info["title"] = GENERATED_TITLE
            sess.info["summary"] = {"additions": 0, "deletions": 0, "files": 0}
            self._session_updated(sess)
            self.bus.publish("session.diff", {"sessionID": sess.id, "diff": []})
        return message

    async def _text_step(
        self, sess: SimSession, run: Run, user: SimMessage, text: str, *, slow: bool, reasoning: str | None = None
    ) -> None:
        message = await self._open_step(sess, user)
        self._add_part(sess, message, {"type": "step-start", "snapshot": sess.snapshot})
        if reasoning:
            await self._stream(sess, run, message, "reasoning", reasoning, 4, REASONING_CHUNK_S)
        await self._stream(sess, run, message, "text", text, 10 if slow else 3, SLOW_CHUNK_S if slow else CHUNK_S)
        await self._close_step(sess, user, message, "stop")

    async def _tool_step(
        self,
        sess: SimSession,
        run: Run,
        user: SimMessage,
        tool: str,
        args: JSON,
        *,
        slow: bool,
        reasoning: str | None,
    ) -> str:
        """One tool call (`bash` or `read`) as OpenCode stores it; returns what the model gets back."""
        message = await self._open_step(sess, user)
        self._add_part(sess, message, {"type": "step-start", "snapshot": sess.snapshot})
        if reasoning:
            await self._stream(sess, run, message, "reasoning", reasoning, 4, REASONING_CHUNK_S)
        fields = {"type": "tool", "callID": f"call_{next(_call_ids):06d}", "tool": tool}
        part = self._add_part(sess, message, fields | {"state": {"status": "pending", "input": {}, "raw": ""}})
        await self._sleep(SLOW_ARGS_S if slow else ARGS_S)
        start = now_ms()
        running = {"status": "running", "input": args, "time": {"start": start}}
        self._set_tool(sess, part, running)
        ended: JSON
        if tool == "read":
            await self._sleep(READ_S)
            ended = read_file(sess.info["directory"], args["filePath"])
            output = str(ended.get("output", ended.get("error")))
        else:
            await self._sleep(0.01)
            self._set_tool(sess, part, running | {"metadata": {"output": ""}})  # bash streams its output
            await self._sleep(SLOW_BASH_S if slow else BASH_S)
            output = "hello\n"
            self._set_tool(sess, part, running | {"metadata": {"output": output}})
            metadata = {"output": output, "exit": 0, "truncated": False}
            ended = {"status": "completed", "output": output, "title": args["command"], "metadata": metadata}
        self._set_tool(sess, part, {"input": args} | ended | {"time": {"start": start, "end": now_ms()}})
        await self._close_step(sess, user, message, "tool-calls")
        return output

    async def _stream(
        self, sess: SimSession, run: Run, message: SimMessage, kind: str, text: str, pieces: int, delay: float
    ) -> None:
        """A text or reasoning part: stored as "" while its deltas stream, with the full text once it ends."""
        part = self._add_part(sess, message, {"type": kind, "text": "", "time": {"start": now_ms()}})
        run.live[part["id"]] = ""
        for piece in _chunks(text, pieces):
            run.live[part["id"]] += piece
            delta = {"messageID": message.info["id"], "partID": part["id"], "field": "text", "delta": piece}
            self.bus.publish("message.part.delta", {"sessionID": sess.id} | delta)
            await self._sleep(delay)
        del run.live[part["id"]]
        part["text"] = text
        part["time"]["end"] = now_ms()
        self._part_updated(sess, part)

    async def _close_step(self, sess: SimSession, user: SimMessage, message: SimMessage, reason: str) -> None:
        fields = {"type": "step-finish", "reason": reason, "snapshot": sess.snapshot, "cost": 0}
        self._add_part(sess, message, fields | {"tokens": _step_tokens()})
        await self._sleep(STEP_END_S)
        message.info |= {"tokens": _step_tokens(), "finish": reason}
        self._message_updated(sess, message)
        await self._sleep(STEP_END_S)
        message.info["time"]["completed"] = now_ms()
        self._message_updated(sess, message)
        tokens = sess.info["tokens"]
        tokens["input"] += 100
        tokens["output"] += 20
        self._session_updated(sess)
        self._set_status(sess, BUSY)  # the loop's next turn starts busy, before it knows whether one more step runs
        # OpenCode sums up each finished step's diff in the background and stores the prompt's message again
        # (unchanged here: no file changes); for the last step that lands after the session went idle.
        self._later(STEP_SUMMARY_S, lambda: self._message_updated(sess, user))

    async def _model_error(self, sess: SimSession, run: Run, user: SimMessage, *, retryable: bool) -> None:
        message = await self._open_step(sess, user)
        error = _api_error(retryable)
        if retryable:
            run.retrying = True
            for attempt, delay in enumerate(self.retry_delays, 1):
                next_ms = now_ms() + round(delay / self.speed * 1000)
                retry = {"type": "retry", "attempt": attempt, "message": error["data"]["message"], "next": next_ms}
                self._set_status(sess, retry)
                await self._sleep(delay)
                self._set_status(sess, BUSY)
            run.retrying = False
        else:
            await self._sleep(REJECT_S)
        # OpenCode reports the session idle before the failed message is final: pollers must re-read it.
        run.error = error
        self.bus.publish("session.error", {"sessionID": sess.id, "error": error})
        self._set_status(sess, None)
        await self._sleep(ERROR_WINDOW_S)
        message.info["error"] = error
        message.info["time"]["completed"] = now_ms()
        self._message_updated(sess, message)
        run.error = None

    # -- state changes, each published as OpenCode's event --------------------------------------------------

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
        self._part_updated(sess, part)

    def _add_part(self, sess: SimSession, message: SimMessage, fields: JSON) -> JSON:
        part = {"id": new_id("prt"), "sessionID": sess.id, "messageID": message.info["id"]} | fields
        message.parts.append(part)
        self._part_updated(sess, part)
        return part

    def _set_tool(self, sess: SimSession, part: JSON, state: JSON) -> None:
        part["state"] = state
        self._part_updated(sess, part)

    def _part_updated(self, sess: SimSession, part: JSON) -> None:
        self.bus.publish("message.part.updated", {"sessionID": sess.id, "part": part, "time": now_ms()})

    def _message_updated(self, sess: SimSession, message: SimMessage) -> None:
        self.bus.publish("message.updated", {"sessionID": sess.id, "info": message.info})

    def _session_updated(self, sess: SimSession) -> None:
        sess.info["time"]["updated"] = now_ms()
        self.bus.publish("session.updated", {"sessionID": sess.id, "info": sess.info})

    def _set_status(self, sess: SimSession, status: JSON | None) -> None:
        sess.status = status
        self.bus.publish("session.status", {"sessionID": sess.id, "status": status or {"type": "idle"}})
        if status is None:
            self.bus.publish("session.idle", {"sessionID": sess.id})

    def _later(self, seconds: float, publish: Callable[[], None]) -> None:
        async def later() -> None:
            await self._sleep(seconds)
            publish()

        if self.task_group is not None:
            self.task_group.start_soon(later)

    async def _sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds / self.speed)
