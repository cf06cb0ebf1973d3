"""The simulator answers with OpenCode 1.18.33's shapes: keys and types at every level, and its transitions.

The expected shapes are written out here from the captured facts (opencode-api README and samples); transitions
are read from `GET /event`, which carries every stored state, so no assertion depends on timing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.ids import new_message_id

pytestmark = pytest.mark.anyio

SPEED = 2.0
ROOT = Path(__file__).resolve().parents[3]
BASH_ABORTED = "(no output)\n\n<shell_metadata>\nUser aborted the command\n</shell_metadata>"


# -- shapes ----------------------------------------------------------------------------------------------------


def _id(prefix: str) -> Callable[[Any], bool]:
    pattern = re.compile(prefix + r"_[0-9a-f]{12}[0-9A-Za-z]{14}")
    return lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None


SES, MSG, PRT, EVT = _id("ses"), _id("msg"), _id("prt"), _id("evt")
HASH = re.compile(r"[0-9a-f]{40}").fullmatch
NUM = (int, float)


@dataclass
class Shape:
    """A JSON object: exactly the `required` keys, plus any of the `optional` ones."""

    required: dict[str, Any]
    optional: dict[str, Any] = field(default_factory=dict)

    def __or__(self, more: dict[str, Any]) -> Shape:
        return Shape(self.required | more, self.optional)


def conform(value: Any, spec: Any, where: str = "$") -> None:
    """spec: a Shape, a type (int excludes bool), a tuple of types, a predicate, or a literal value."""
    if isinstance(spec, Shape):
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        missing = spec.required.keys() - value.keys()
        extra = value.keys() - spec.required.keys() - spec.optional.keys()
        assert not missing and not extra, f"{where}: missing {sorted(missing)}, unexpected {sorted(extra)}"
        for key, item in value.items():
            conform(item, spec.required.get(key, spec.optional.get(key)), f"{where}.{key}")
    elif spec is int:
        assert type(value) is int, f"{where}: expected int, got {value!r}"
    elif isinstance(spec, type | tuple):
        assert isinstance(value, spec) and not isinstance(value, bool), f"{where}: expected {spec}, got {value!r}"
    elif callable(spec):
        assert spec(value), f"{where}: unexpected {value!r}"
    else:
        assert value == spec, f"{where}: expected {spec!r}, got {value!r}"


CACHE = Shape({"read": int, "write": int})
TOKENS = Shape({"input": int, "output": int, "reasoning": int, "cache": CACHE})
STEP_TOKENS = TOKENS | {"total": int}
SESSION = Shape(
    {
        "id": SES,
        "slug": str,
        "projectID": HASH,
        "directory": str,
        "path": "",
        "cost": NUM,
        "tokens": TOKENS,
        "title": str,
        "version": "1.18.33",
        "time": Shape({"created": int, "updated": int}),
    },
    optional={
        "summary": Shape({"additions": int, "deletions": int, "files": int}),
        "agent": str,
        "model": Shape({"id": str, "providerID": str, "variant": str}),
    },
)
USER = Shape(
    {
        "id": MSG,
        "sessionID": SES,
        "role": "user",
        "time": Shape({"created": int}),
        "agent": str,
        "model": Shape({"providerID": str, "modelID": str}),
    },
    optional={"summary": Shape({"diffs": []})},
)
ASSISTANT_BASE = {
    "id": MSG,
    "sessionID": SES,
    "role": "assistant",
    "parentID": MSG,
    "modelID": str,
    "providerID": str,
    "mode": str,
    "agent": str,
    "path": Shape({"cwd": str, "root": str}),
    "cost": NUM,
}
OPEN = Shape(ASSISTANT_BASE | {"time": Shape({"created": int}), "tokens": TOKENS})
COMPLETED_TIME = Shape({"created": int, "completed": int})


def finished(finish: str) -> Shape:
    return Shape(ASSISTANT_BASE | {"time": COMPLETED_TIME, "tokens": STEP_TOKENS, "finish": finish})


def failed(error: Shape) -> Shape:
    return Shape(ASSISTANT_BASE | {"time": COMPLETED_TIME, "tokens": TOKENS, "error": error})


ABORTED = Shape({"name": "MessageAbortedError", "data": Shape({"message": "Aborted"})})


def api_error(status: int, retryable: bool) -> Shape:
    data = {"message": str, "statusCode": status, "isRetryable": retryable, "responseBody": str}
    headers = Shape({"content-length": str, "content-type": str, "date": str, "server": str})
    return Shape(
        {"name": "APIError", "data": Shape(data | {"responseHeaders": headers, "metadata": Shape({"url": str})})}
    )


PART = {"id": PRT, "sessionID": SES, "messageID": MSG}
USER_TEXT = Shape(PART | {"type": "text", "text": str})
STEP_START = Shape(PART | {"type": "step-start", "snapshot": HASH})
SPAN = Shape({"start": int, "end": int})
STREAMING = {"text": "", "time": Shape({"start": int})}
TEXT = Shape(PART | {"type": "text", "text": str, "time": SPAN})
REASONING = Shape(PART | {"type": "reasoning", "text": str, "time": SPAN})


def step_finish(reason: str) -> Shape:
    return Shape(PART | {"type": "step-finish", "reason": reason, "snapshot": HASH, "cost": NUM, "tokens": STEP_TOKENS})


def tool(name: str, state: Shape) -> Shape:
    return Shape(PART | {"type": "tool", "callID": str, "tool": name, "state": state})


PENDING = Shape({"status": "pending", "input": {}, "raw": ""})
RUNNING = Shape(
    {"status": "running", "input": dict, "time": Shape({"start": int})}, optional={"title": str, "metadata": dict}
)
COMPLETED = Shape({"status": "completed", "input": dict, "output": str, "title": str, "metadata": dict, "time": SPAN})
TOOL_ERROR = Shape({"status": "error", "input": dict, "error": str, "time": SPAN})
BASH_METADATA = Shape({"output": str, "exit": int, "truncated": False})
RETRY = Shape({"type": "retry", "attempt": int, "message": str, "next": int})
EVENT = Shape({"id": EVT, "type": str, "properties": dict})


def conform_messages(messages: list[dict[str, Any]], specs: list[tuple[Shape, list[Shape]]]) -> None:
    assert len(messages) == len(specs), [m["info"]["role"] for m in messages]
    for i, (message, (info, parts)) in enumerate(zip(messages, specs, strict=True)):
        conform(message, Shape({"info": dict, "parts": list}), f"[{i}]")
        conform(message["info"], info, f"[{i}].info")
        assert len(message["parts"]) == len(parts), [p["type"] for p in message["parts"]]
        for j, (part, spec) in enumerate(zip(message["parts"], parts, strict=True)):
            conform(part, spec, f"[{i}].parts[{j}]")
            assert part["messageID"] == message["info"]["id"]
    ids = [m["info"]["id"] for m in messages]
    assert ids == sorted(ids), "messages are listed by id, and msg_ ids ascend"
    for message in messages:
        part_ids = [p["id"] for p in message["parts"]]
        assert part_ids == sorted(part_ids), "parts are listed by id, and prt_ ids ascend"


# -- a simulated server and a few ways to drive it -------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with serve_in_thread(create_simulator(SPEED, retry_delays=(0.1, 0.1, 0.1), heartbeat_s=0.3)) as url:
        yield url


@pytest.fixture(scope="module")
def slow_retry_url() -> Iterator[str]:
    with serve_in_thread(create_simulator(SPEED, retry_delays=(60.0,))) as url:
        yield url


@pytest.fixture
async def http(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim_url, timeout=20) as client:
        yield client


async def new_session(http: httpx.AsyncClient, **body: Any) -> str:
    resp = await http.post("/session", json=body)
    assert resp.status_code == 200
    return str(resp.json()["id"])


async def prompt(http: httpx.AsyncClient, session_id: str, text: str, message_id: str | None = None) -> str:
    message_id = message_id or new_message_id()
    body = {"messageID": message_id, "parts": [{"type": "text", "text": text}]}
    resp = await http.post(f"/session/{session_id}/prompt_async", json=body)
    assert resp.status_code == 204 and resp.content == b""
    return message_id


async def messages(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    resp = await http.get(f"/session/{session_id}/message")
    assert resp.status_code == 200
    return list(resp.json())


async def status(http: httpx.AsyncClient) -> dict[str, Any]:
    return dict((await http.get("/session/status")).json())


def is_finished(session_status: dict[str, Any], session_id: str, msgs: list[dict[str, Any]]) -> bool:
    """The README's rule: absent from /session/status, newest message a completed, final assistant step."""
    if session_id in session_status or not msgs:
        return False
    info = msgs[-1]["info"]
    return (
        info["role"] == "assistant"
        and "completed" in info["time"]
        and ("error" in info or info["finish"] != "tool-calls")
    )


async def wait_for(http: httpx.AsyncClient, session_id: str, check: Callable[[list[Any]], bool]) -> list[Any]:
    """Poll the message list until `check` holds (20 s at most)."""
    with anyio.fail_after(20):
        while True:
            if check(msgs := await messages(http, session_id)):
                return msgs
            await anyio.sleep(0.02)


async def wait_status(http: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    with anyio.fail_after(20):
        while True:
            if check(found := await status(http)):
                return found
            await anyio.sleep(0.02)


async def run_to_end(http: httpx.AsyncClient, session_id: str, text: str) -> list[dict[str, Any]]:
    """Prompt, then poll until the README's completion rule holds."""
    await prompt(http, session_id, text)
    with anyio.fail_after(20):
        while True:
            msgs = await messages(http, session_id)
            if is_finished(await status(http), session_id, msgs):
                return msgs
            await anyio.sleep(0.02)


class EventStream:
    """`GET /event`, subscribed before the test acts (the server sends server.connected once subscribed)."""

    def __init__(self, base_url: str) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=20)
        self.seen: list[dict[str, Any]] = []

    async def __aenter__(self) -> EventStream:
        self._response = await self._client.send(self._client.build_request("GET", "/event"), stream=True)
        assert self._response.headers["content-type"] == "text/event-stream"
        self._lines = self._response.aiter_lines()
        connected = await self.next()
        assert connected["type"] == "server.connected"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._response.aclose()
        await self._client.aclose()

    async def next(self) -> dict[str, Any]:
        async for line in self._lines:
            if line:
                assert line.startswith("data: "), line  # only data lines: no event:/id: fields
                event = json.loads(line[len("data: ") :])
                conform(event, EVENT)
                self.seen.append(event)
                return dict(event)
        raise AssertionError("event stream ended")

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with anyio.fail_after(20):
            while not predicate(await self.next()):
                pass
        return self.seen

    def of(self, session_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(e["type"], e["properties"]) for e in self.seen if e["properties"].get("sessionID") == session_id]


def step_end(timeline: list[tuple[str, dict[str, Any]]], message_id: str) -> list[str]:
    seen = []
    for kind, props in timeline:
        if kind == "message.part.updated" and props["part"]["messageID"] == message_id:
            seen += ["step-finish"] if props["part"]["type"] == "step-finish" else []
        elif kind == "message.updated" and props["info"]["id"] == message_id:
            info = props["info"]
            seen += ["completed"] if "completed" in info["time"] else ["finish"] if "finish" in info else []
    return seen


def idle_event(session_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "session.idle" and e["properties"]["sessionID"] == session_id


# -- sessions --------------------------------------------------------------------------------------------------


async def test_health_and_sessions(http: httpx.AsyncClient) -> None:
    assert (await http.get("/global/health")).json() == {"healthy": True, "version": "1.18.33"}
    created = (await http.post("/session", json={})).json()
    conform(created, SESSION)
    assert created.keys() == SESSION.required.keys()  # agent, model, summary come with the first prompt
    assert re.fullmatch(r"New session - \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", created["title"])
    titled = (await http.post("/session", json={"title": "mine"})).json()
    listed = (await http.get("/session")).json()
    assert [s["id"] for s in listed][:2] == [titled["id"], created["id"]]  # newest first
    assert titled["id"] < created["id"]  # ses_ ids descend

    await run_to_end(http, created["id"], "ECHO hi")
    await run_to_end(http, titled["id"], "ECHO hi")
    after = (await http.get(f"/session/{created['id']}")).json()
    conform(after, SESSION)
    assert after.keys() == SESSION.required.keys() | SESSION.optional.keys()
    assert after["title"] == "Scripted test session" and after["tokens"]["output"] > 0
    assert (await http.get(f"/session/{titled['id']}")).json()["title"] == "mine"


async def test_http_errors(http: httpx.AsyncClient) -> None:
    missing = "ses_doesnotexist000000000000"
    not_found = {"name": "NotFoundError", "data": {"message": f"Session not found: {missing}"}}
    for method, path in [("GET", ""), ("GET", "/message"), ("POST", "/prompt_async")]:
        resp = await http.request(method, f"/session/{missing}{path}", json={"parts": [{"type": "text", "text": "x"}]})
        assert (resp.status_code, resp.json()) == (404, not_found)
    assert (await http.post(f"/session/{missing}/abort")).json() is True

    resp = await http.get("/session/not-a-session-id/message")
    assert resp.status_code == 500
    conform(resp.json(), Shape({"name": "UnknownError", "data": Shape({"message": str, "ref": _ref})}))

    session_id = await new_session(http)
    resp = await http.post(f"/session/{session_id}/prompt_async", json={"nope": 1})
    missing_parts = {"name": "BadRequest", "data": {"message": 'Missing key\n  at ["parts"]', "kind": "Payload"}}
    assert (resp.status_code, resp.json()) == (400, missing_parts)
    resp = await http.post(f"/session/{session_id}/message", json={"parts": [{"type": "bogus"}]})
    assert resp.status_code == 400 and resp.json()["data"]["message"].endswith(
        'got {"type":"bogus"}\n  at ["parts"][0]'
    )
    assert await messages(http, session_id) == []


def _ref(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"err_[0-9a-f]{8}", value) is not None


# -- one run per scenario --------------------------------------------------------------------------------------


async def test_echo(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    message_id = await prompt(http, session_id, "ECHO hello world")
    assert (await status(http))[session_id] == {"type": "busy"}  # busy as soon as the 204 is back
    msgs = await wait_for(http, session_id, lambda m: bool(m) and is_finished({}, session_id, m))
    conform_messages(msgs, [(USER, [USER_TEXT]), (finished("stop"), [STEP_START, TEXT, step_finish("stop")])])
    assert msgs[0]["info"]["id"] == message_id and msgs[0]["info"]["summary"] == {"diffs": []}
    assert msgs[1]["info"]["parentID"] == message_id
    assert msgs[1]["parts"][1]["text"] == "ECHO: ECHO hello world"
    await wait_status(http, lambda found: session_id not in found)


async def test_tool_run_transitions(sim_url: str, http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    async with EventStream(sim_url) as events:
        user_id = await prompt(http, session_id, "TOOL run echo hello")
        await events.until(idle_event(session_id))
    msgs = await messages(http, session_id)
    done_bash = tool("bash", COMPLETED)
    conform_messages(
        msgs,
        [
            (USER, [USER_TEXT]),
            (finished("tool-calls"), [STEP_START, done_bash, step_finish("tool-calls")]),
            (finished("stop"), [STEP_START, TEXT, step_finish("stop")]),
        ],
    )
    state = msgs[1]["parts"][1]["state"]
    assert state["input"] == {"command": "echo hello"} and state["output"] == "hello\n"
    conform(state["metadata"], BASH_METADATA)
    assert msgs[2]["parts"][1]["text"] == "The tool ran. Output: hello"
    assert {m["info"]["parentID"] for m in msgs[1:]} == {user_id}

    timeline = events.of(session_id)
    parts = [p["part"] for t, p in timeline if t == "message.part.updated"]
    tool_states = [p["state"] for p in parts if p["type"] == "tool"]
    assert tool_states[0]["status"] == "pending" and tool_states[-1]["status"] == "completed"
    assert "pending" not in [s["status"] for s in tool_states[1:]]
    for s in tool_states:
        conform(s, {"pending": PENDING, "running": RUNNING, "completed": COMPLETED}[s["status"]])
    text_states = [p for p in parts if p["type"] == "text"]
    conform(text_states[-2], Shape(PART | {"type": "text"} | STREAMING))  # stored "" while it streams
    conform(text_states[-1], TEXT)
    deltas = "".join(
        p["delta"] for t, p in timeline if t == "message.part.delta" and p["partID"] == text_states[-1]["id"]
    )
    assert deltas == text_states[-1]["text"]
    # the end of each step: step-finish stored -> info.finish -> info.time.completed; then one idle at the end
    for message in msgs[1:]:
        assert step_end(timeline, message["info"]["id"]) == ["step-finish", "finish", "completed"]
    statuses = [p["status"]["type"] for t, p in timeline if t == "session.status"]
    assert statuses[0] == "busy" and statuses[-1] == "idle" and set(statuses[:-1]) == {"busy"}
    assert timeline[-1][0] == "session.idle"


async def test_tool_error(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    msgs = await run_to_end(http, session_id, "TOOLERR read a missing file")
    conform_messages(
        msgs,
        [
            (USER, [USER_TEXT]),
            (finished("tool-calls"), [STEP_START, tool("read", TOOL_ERROR), step_finish("tool-calls")]),
            (finished("stop"), [STEP_START, TEXT, step_finish("stop")]),
        ],
    )
    state = msgs[1]["parts"][1]["state"]
    assert state["input"] == {"filePath": "does-not-exist.txt"}
    assert state["error"].startswith("File not found: ") and state["error"].endswith("/does-not-exist.txt")
    assert msgs[2]["parts"][1]["text"] == f"The tool ran. Output: {state['error']}"


async def test_think(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    msgs = await run_to_end(http, session_id, "THINK then ECHO")
    conform_messages(
        msgs, [(USER, [USER_TEXT]), (finished("stop"), [STEP_START, REASONING, TEXT, step_finish("stop")])]
    )
    assert msgs[1]["parts"][2]["text"] == "ECHO: THINK then ECHO"


async def test_fail_retries_then_errors(sim_url: str, http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    async with EventStream(sim_url) as events:
        await prompt(http, session_id, "FAIL please")
        await events.until(lambda e: e["type"] == "message.updated" and "error" in e["properties"]["info"])
        await events.until(idle_event(session_id))
    timeline = events.of(session_id)
    statuses = [p["status"] for t, p in timeline if t == "session.status"]
    retries = [s for s in statuses if s["type"] == "retry"]
    for s in retries:
        conform(s, RETRY)
    assert [s["attempt"] for s in retries] == [1, 2, 3]
    assert retries[0]["message"] == "Scripted failure (prompt contained FAIL)"
    kinds = [s["type"] for s in statuses]
    assert kinds[: kinds.index("idle")] == ["busy", "busy", "retry", "busy", "retry", "busy", "retry", "busy"]
    # the session goes idle before the message is final: session.error -> idle -> message.updated(error) -> idle
    names = [t for t, p in timeline if t != "session.status" or p["status"]["type"] == "idle"]
    tail = names[names.index("session.error") :]
    assert tail == [
        "session.error",
        "session.status",
        "session.idle",
        "message.updated",
        "session.status",
        "session.idle",
    ]

    msgs = await messages(http, session_id)
    conform_messages(msgs, [(USER, [USER_TEXT]), (failed(api_error(500, True)), [])])
    assert session_id not in await status(http)
    error = next(p["error"] for t, p in timeline if t == "session.error")
    assert error == msgs[1]["info"]["error"]


async def test_reject_fails_at_once(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    resp = await http.post(f"/session/{session_id}/message", json={"parts": [{"type": "text", "text": "REJECT this"}]})
    assert resp.status_code == 200  # the blocking call answers 200 with the failed assistant message
    conform(resp.json(), Shape({"info": failed(api_error(400, False)), "parts": []}))
    msgs = await messages(http, session_id)
    conform_messages(msgs, [(USER, [USER_TEXT]), (failed(api_error(400, False)), [])])
    assert msgs[1]["info"]["error"]["data"]["message"] == "Scripted rejection (prompt contained REJECT)"


async def test_blocking_message_returns_last_assistant(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    body = {"parts": [{"type": "text", "text": "TOOL blocking"}]}
    reply = (await http.post(f"/session/{session_id}/message", json=body)).json()
    conform(reply, Shape({"info": finished("stop"), "parts": list}))
    msgs = await messages(http, session_id)
    assert reply == msgs[-1] and len(msgs) == 3


# -- aborts ----------------------------------------------------------------------------------------------------


async def test_abort_while_text_streams(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    await prompt(http, session_id, "SLOW story")
    await wait_for(http, session_id, lambda m: len(m) == 2 and any(p["type"] == "text" for p in m[1]["parts"]))
    resp = await http.post(f"/session/{session_id}/abort")
    assert (resp.status_code, resp.json()) == (200, True)
    assert session_id not in await status(http)  # synchronous: already idle and final
    msgs = await messages(http, session_id)
    conform_messages(msgs, [(USER, [USER_TEXT]), (failed(ABORTED), [STEP_START, TEXT])])
    partial = msgs[1]["parts"][1]["text"]
    assert partial and "Slow answer to: SLOW story".startswith(partial) and partial != "Slow answer to: SLOW story"
    assert "finish" not in msgs[1]["info"]


async def test_abort_while_bash_runs(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    await prompt(http, session_id, "TOOL SLOW abort me")

    def running(m: list[dict[str, Any]]) -> bool:
        return len(m) == 2 and any(p["type"] == "tool" and p["state"]["status"] == "running" for p in m[1]["parts"])

    await wait_for(http, session_id, running)
    assert (await http.post(f"/session/{session_id}/abort")).json() is True
    msgs = await messages(http, session_id)
    conform_messages(msgs, [(USER, [USER_TEXT]), (failed(ABORTED), [STEP_START, tool("bash", COMPLETED)])])
    state = msgs[1]["parts"][1]["state"]
    assert state["output"] == BASH_ABORTED and state["title"] == "sleep 4; echo hello"
    assert state["metadata"] == {"output": BASH_ABORTED, "exit": None, "truncated": False}
    assert session_id not in await status(http)


async def test_abort_while_retrying(slow_retry_url: str) -> None:
    async with httpx.AsyncClient(base_url=slow_retry_url, timeout=20) as http:
        session_id = await new_session(http)
        await prompt(http, session_id, "FAIL then abort")
        retrying = await wait_status(http, lambda found: found.get(session_id, {}).get("type") == "retry")
        conform(retrying[session_id], RETRY)
        assert (await messages(http, session_id))[-1]["parts"] == []  # open, no parts, while retrying
        assert (await http.post(f"/session/{session_id}/abort")).json() is True
        msgs = await messages(http, session_id)
        closed = Shape(ASSISTANT_BASE | {"time": COMPLETED_TIME, "tokens": TOKENS})  # no error, no finish
        conform_messages(msgs, [(USER, [USER_TEXT]), (closed, [])])
        assert session_id not in await status(http)


async def test_abort_idle_session_and_blocking_call(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    assert (await http.post(f"/session/{session_id}/abort")).json() is True
    body = {"parts": [{"type": "text", "text": "SLOW blocking"}]}
    async with anyio.create_task_group() as tg:
        replies: list[httpx.Response] = []

        async def blocking() -> None:
            replies.append(await http.post(f"/session/{session_id}/message", json=body))

        tg.start_soon(blocking)
        await wait_for(http, session_id, lambda m: len(m) == 2 and len(m[1]["parts"]) >= 2)
        assert (await http.post(f"/session/{session_id}/abort")).json() is True
    assert replies[0].status_code == 200
    assert replies[0].json() == (await messages(http, session_id))[-1]
    conform(replies[0].json()["info"], failed(ABORTED))


# -- queueing, duplicates, paging ------------------------------------------------------------------------------


async def test_prompt_while_busy_is_queued(sim_url: str, http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    async with EventStream(sim_url) as events:
        first = await prompt(http, session_id, "SLOW first")
        await wait_for(http, session_id, lambda m: len(m) == 2)  # as captured: the first answer has begun
        second = await prompt(http, session_id, "ECHO second while busy")
        during = await messages(http, session_id)
        assert during[-1]["info"]["id"] == second and "summary" not in during[-1]["info"]  # appended now
        assert (await status(http))[session_id] == {"type": "busy"}
        await events.until(idle_event(session_id))
    msgs = await messages(http, session_id)
    step = (finished("stop"), [STEP_START, TEXT, step_finish("stop")])
    conform_messages(msgs, [(USER, [USER_TEXT]), step, (USER, [USER_TEXT]), step])
    assert [m["info"]["id"] for m in msgs[::2]] == [first, second]
    assert [m["info"]["parentID"] for m in msgs[1::2]] == [first, second]
    assert msgs[3]["parts"][1]["text"] == "ECHO: ECHO second while busy"
    # busy until every queued prompt is answered: one idle, after the last message completed
    timeline = events.of(session_id)
    assert [t for t, _ in timeline].count("session.idle") == 1
    assert session_id not in await status(http)


async def test_known_message_id_appends_its_parts_again(sim_url: str, http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    await run_to_end(http, session_id, "ECHO once")
    message_id = new_message_id()  # fresh: OpenCode orders messages by id
    first = await prompt(http, session_id, "ECHO twice", message_id)
    msgs = await wait_for(http, session_id, lambda m: len(m) == 4 and is_finished({}, session_id, m))
    await prompt(http, session_id, "ECHO twice", message_id)
    again = await messages(http, session_id)
    assert first == message_id and len(again) == len(msgs) == 4  # one message, no second answer
    dup = again[2]
    assert dup["info"]["id"] == message_id and [p["text"] for p in dup["parts"]] == ["ECHO twice", "ECHO twice"]
    assert len({p["id"] for p in dup["parts"]}) == 2
    stats = (await http.get("/__sim/stats")).json()
    assert stats["prompt_async"]["by_message_id"][message_id] == 2
    assert stats["prompt_async"]["by_session"][session_id] == 3


async def test_limit_pages_with_cursor(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    await run_to_end(http, session_id, "ECHO one")
    full = await run_to_end(http, session_id, "ECHO two")
    assert len(full) == 4
    resp = await http.get(f"/session/{session_id}/message", params={"limit": 1})
    assert resp.json() == full[-1:]
    cursor = resp.headers["x-next-cursor"]
    link = f'<{http.base_url.join(f"/session/{session_id}/message")}?limit=1&before={cursor}>; rel="next"'
    assert resp.headers["link"] == link
    assert json.loads(base64.urlsafe_b64decode(cursor + "==")) == {
        "id": full[-1]["info"]["id"],
        "time": full[-1]["info"]["time"]["created"],
    }
    pages, params = [resp.json()], {"limit": "3", "before": cursor}
    while True:
        resp = await http.get(f"/session/{session_id}/message", params=params)
        pages.insert(0, resp.json())
        if "x-next-cursor" not in resp.headers:
            break
        params["before"] = resp.headers["x-next-cursor"]
    assert [m for page in pages for m in page] == full
    everything = await http.get(f"/session/{session_id}/message", params={"limit": 10})
    assert everything.json() == full and "link" not in everything.headers
    resp = await http.get(f"/session/{session_id}/message", params={"before": full[1]["info"]["id"]})
    assert (resp.status_code, resp.json()) == (400, {"_tag": "BadRequest"})


# -- events, controls, process ---------------------------------------------------------------------------------


async def test_event_stream_heartbeat(sim_url: str) -> None:
    async with EventStream(sim_url) as events:
        await events.until(lambda e: e["type"] == "server.heartbeat")
    assert events.seen[-1]["properties"] == {}


async def test_sim_controls(http: httpx.AsyncClient) -> None:
    resp = await http.post("/__sim/faults", json={"kind": "error500", "path": "/global/health", "count": 2})
    assert resp.json() == [{"kind": "error500", "path": "/global/health", "method": None, "count": 2, "ms": 0}]
    assert [(await http.get("/global/health")).status_code for _ in range(3)] == [500, 500, 200]
    assert (await http.post("/__sim/faults", json={"kind": "nope"})).status_code == 400
    await http.post("/__sim/faults", json={"kind": "malformed"})
    assert (await http.get("/__sim/faults")).json()[0]["kind"] == "malformed"
    assert (await http.delete("/__sim/faults")).json() == []
    assert (await http.get("/global/health")).json()["healthy"] is True

    session_id = await new_session(http)
    await prompt(http, session_id, "SLOW interrupted by a reset")
    assert (await http.post("/__sim/reset")).json() is True
    assert (await http.get(f"/session/{session_id}")).status_code == 404
    assert await status(http) == {}
    stats = (await http.get("/__sim/stats")).json()
    assert stats["prompt_async"] == {"total": 0, "by_session": {}, "by_message_id": {}}


async def test_runs_as_a_process(tmp_path: Path) -> None:
    port_file = anyio.Path(tmp_path / "port")
    cmd = [sys.executable, "-m", "shared.dev.simulator", "--port", "0", "--port-file", str(port_file)]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    process = await anyio.open_process([*cmd, "--speed", "4"], cwd=ROOT, env=env, stdout=None, stderr=None)
    try:
        with anyio.fail_after(20):
            while not await port_file.exists():
                assert process.returncode is None, "the simulator process exited"
                await anyio.sleep(0.05)
        port = await port_file.read_text()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert (await http.get("/global/health")).json()["version"] == "1.18.33"
            session_id = await new_session(http)
            msgs = await run_to_end(http, session_id, "ECHO from a process")
            assert msgs[-1]["parts"][1]["text"] == "ECHO: ECHO from a process"
    finally:
        process.terminate()
        with anyio.fail_after(15):
            await process.wait()
