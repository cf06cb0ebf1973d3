"""OpenCodeClient against the simulator served by uvicorn: the calls, and how each failure is translated."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.errors import NotFound, OpenCodeError, Unavailable, Unreached
from shared.ids import new_message_id
from shared.models import loads
from shared.opencode.client import UNREADABLE, OpenCodeClient
from shared.opencode.types import Message, SessionStatus

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with serve_in_thread(create_simulator(2.0)) as url:
        yield url


@pytest.fixture
async def oc(sim_url: str) -> AsyncIterator[OpenCodeClient]:
    async with OpenCodeClient(sim_url, timeout_s=5) as client:
        yield client
    async with httpx.AsyncClient(base_url=sim_url) as http:
        await http.delete("/__sim/faults")


async def add_fault(sim_url: str, **fault: Any) -> None:
    async with httpx.AsyncClient(base_url=sim_url) as http:
        (await http.post("/__sim/faults", json=fault)).raise_for_status()


async def sim_stats(sim_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=sim_url) as http:
        return dict((await http.get("/__sim/stats")).json())


def is_finished(status: dict[str, SessionStatus], session_id: str, msgs: list[Message]) -> bool:
    """The README's rule: absent from /session/status, newest message a completed, final assistant step."""
    if session_id in status or not msgs:
        return False
    info = msgs[-1]["info"]
    if info["role"] != "assistant" or "completed" not in info["time"]:
        return False
    return "error" in info or info.get("finish") != "tool-calls"


async def wait_finished(oc: OpenCodeClient, session_id: str) -> list[Message]:
    with anyio.fail_after(20):
        while True:
            status, msgs = await oc.status(), await oc.messages(session_id)
            if is_finished(status, session_id, msgs):
                return msgs
            await anyio.sleep(0.02)


async def test_session_prompt_and_poll_to_the_end(oc: OpenCodeClient, sim_url: str) -> None:
    assert await oc.health() == {"healthy": True, "version": "1.18.33"}
    session = await oc.create_session(title="client test")
    assert session["title"] == "client test" and session["id"].startswith("ses_")
    assert (await oc.get_session(session["id"]))["id"] == session["id"]

    message_id = new_message_id()
    await oc.prompt_async(session["id"], message_id=message_id, text="TOOL run echo hello")
    assert (await oc.status())[session["id"]] == {"type": "busy"}
    msgs = await wait_finished(oc, session["id"])
    assert [m["info"]["role"] for m in msgs] == ["user", "assistant", "assistant"]
    assert msgs[0]["info"]["id"] == message_id
    last = msgs[-1]["info"]
    assert last["role"] == "assistant" and last.get("finish") == "stop"
    assert [p["type"] for p in msgs[-1]["parts"]] == ["step-start", "text", "step-finish"]
    assert await oc.messages(session["id"], limit=1) == msgs[-1:]
    assert (await sim_stats(sim_url))["prompt_async"]["by_message_id"][message_id] == 1


async def test_prompt_with_agent_and_model(oc: OpenCodeClient) -> None:
    session = await oc.create_session()
    model = {"providerID": "other", "modelID": "model-2"}
    await oc.prompt_async(session["id"], message_id=new_message_id(), text="ECHO hi", agent="plan", model=model)
    user, reply = (m["info"] for m in await wait_finished(oc, session["id"]))
    assert user["role"] == "user" and user["agent"] == "plan" and user["model"] == model
    assert reply["role"] == "assistant" and (reply["providerID"], reply["modelID"]) == ("other", "model-2")


async def test_directory_scopes_instance_routes(sim_url: str, tmp_path: Path) -> None:
    async with OpenCodeClient(sim_url, directory=str(tmp_path)) as oc:
        session = await oc.create_session()
        assert session["directory"] == str(tmp_path)
        assert (await oc.health())["healthy"] is True


async def test_abort(oc: OpenCodeClient) -> None:
    session = await oc.create_session()
    await oc.prompt_async(session["id"], message_id=new_message_id(), text="SLOW story")
    with anyio.fail_after(20):
        while True:
            if len(await oc.messages(session["id"])) == 2:  # the answer has begun
                break
            await anyio.sleep(0.02)
    assert await oc.abort(session["id"]) is True
    assert session["id"] not in await oc.status()
    info = (await oc.messages(session["id"]))[-1]["info"]
    assert info["role"] == "assistant" and "completed" in info["time"]
    assert info.get("error") == {"name": "MessageAbortedError", "data": {"message": "Aborted"}}
    assert await oc.abort(session["id"]) is True  # idle
    assert await oc.abort("ses_doesnotexist000000000000") is True  # unknown


async def test_not_found_and_server_errors(oc: OpenCodeClient) -> None:
    missing = "ses_doesnotexist000000000000"
    with pytest.raises(NotFound, match=f"Session not found: {missing}"):
        await oc.get_session(missing)
    with pytest.raises(NotFound):
        await oc.messages(missing)
    with pytest.raises(NotFound):
        await oc.prompt_async(missing, message_id=new_message_id(), text="x")
    with pytest.raises(OpenCodeError, match="500 UnknownError: Unexpected server error") as info:
        await oc.get_session("not-a-session-id")
    assert info.value.status_code == 500 and info.value.retryable


async def test_bad_request_is_not_retryable(oc: OpenCodeClient) -> None:
    session = await oc.create_session()
    with pytest.raises(OpenCodeError, match="400 BadRequest") as info:
        await oc.prompt_async(session["id"], message_id="not-a-msg-id", text="x")
    assert info.value.status_code == 400 and not info.value.retryable


async def test_error500_fault(oc: OpenCodeClient, sim_url: str) -> None:
    await add_fault(sim_url, kind="error500", path="/session/status", count=1)
    with pytest.raises(OpenCodeError) as info:
        await oc.status()
    assert info.value.status_code == 500 and info.value.retryable
    assert await oc.status() is not None  # count=1: the next request is answered


async def test_malformed_fault(oc: OpenCodeClient, sim_url: str) -> None:
    await add_fault(sim_url, kind="malformed", path="/session/*/message")
    with pytest.raises(OpenCodeError, match="malformed response") as info:
        await oc.messages("ses_doesnotexist000000000000")
    assert info.value.status_code is None and info.value.retryable


async def test_reset_fault_is_unavailable(oc: OpenCodeClient, sim_url: str) -> None:
    session = await oc.create_session()
    # until cleared: aiohttp silently retries an idempotent request once when a kept-alive connection drops
    await add_fault(sim_url, kind="reset", path="/session/status")
    with pytest.raises(Unavailable, match=re.escape(f"OpenCode at {sim_url} unavailable: GET /session/status: ")):
        await oc.status()
    await add_fault(sim_url, kind="reset", method="POST", path="/session/*/prompt_async", count=1)
    lost = new_message_id()
    with pytest.raises(Unavailable):
        await oc.prompt_async(session["id"], message_id=lost, text="ECHO never arrives")
    assert lost not in (await sim_stats(sim_url))["prompt_async"]["by_message_id"]


async def test_reset_after_handling_delivers_once(oc: OpenCodeClient, sim_url: str) -> None:
    """The answer is lost but the prompt arrived: the simulator's stats tell the two cases apart."""
    session = await oc.create_session()
    await add_fault(sim_url, kind="reset_after", method="POST", path="/session/*/prompt_async", count=1)
    message_id = new_message_id()
    with pytest.raises(Unavailable):
        await oc.prompt_async(session["id"], message_id=message_id, text="ECHO delivered")
    assert (await sim_stats(sim_url))["prompt_async"]["by_message_id"][message_id] == 1
    msgs = await wait_finished(oc, session["id"])
    assert msgs[0]["info"]["id"] == message_id


async def test_timeout_is_unavailable(sim_url: str) -> None:
    await add_fault(sim_url, kind="slow", path="/global/health", ms=3000)
    try:
        async with OpenCodeClient(sim_url, timeout_s=0.2) as oc:
            with pytest.raises(Unavailable, match=r"timed out after 0\.2 s"):
                await oc.health()
    finally:
        async with httpx.AsyncClient(base_url=sim_url) as http:
            await http.delete("/__sim/faults")


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: connections are refused
        async with OpenCodeClient(url) as oc:
            with pytest.raises(Unavailable, match=re.escape(f"OpenCode at {url} unavailable: GET /global/health: ")):
                await oc.health()
            with pytest.raises(Unreached):  # never left: a prompt may be sent again at once (poller/prompts.py)
                await oc.prompt_async("ses_x", message_id=new_message_id(), text="never sent")


async def test_a_late_fault_carries_out_a_request_whose_client_gave_up(sim_url: str) -> None:
    async with OpenCodeClient(sim_url, timeout_s=0.2) as oc:
        session = await oc.create_session()
        await add_fault(sim_url, kind="late", method="POST", path="/session/*/prompt_async", count=1, ms=500)
        message_id = new_message_id()
        with pytest.raises(Unavailable, match=r"timed out after 0\.2 s") as info:
            await oc.prompt_async(session["id"], message_id=message_id, text="ECHO late")
        assert not isinstance(info.value, Unreached)  # it left: it may still be carried out
        assert message_id not in (await sim_stats(sim_url))["prompt_async"]["by_message_id"]
    async with OpenCodeClient(sim_url, timeout_s=5) as oc:
        msgs = await wait_finished(oc, session["id"])
    assert msgs[0]["info"]["id"] == message_id


async def test_unexpected_shapes_are_malformed() -> None:
    async def wrong(request: Request) -> Response:
        return JSONResponse({"not": "what was asked"} if request.url.path.endswith("/message") else ["nor", "this"])

    routes = [Route(path, wrong, methods=["GET", "POST"]) for path in ["/session/status", "/session/{id}/message"]]
    routes += [Route("/session/{id}/abort", wrong, methods=["POST"]), Route("/session/{id}", wrong)]
    with serve_in_thread(Starlette(routes=routes)) as url:
        async with OpenCodeClient(url) as oc:
            calls: list[Callable[[], Awaitable[object]]] = [oc.status, lambda: oc.messages("ses_x")]
            calls += [lambda: oc.abort("ses_x"), lambda: oc.get_session("ses_x")]
            for call in calls:
                with pytest.raises(OpenCodeError, match=r"malformed response from OpenCode: .*unexpected shape") as err:
                    await call()
                assert err.value.status_code is None


MALFORMED_LISTS = [
    {"not": "a list"},
    [{"info": {"id": "msg_1"}}],  # no parts
    [{"info": {"role": "user"}, "parts": []}],  # no message id
    [{"info": {"id": "msg_1"}, "parts": [{"id": "prt_1"}]}],  # a part without its messageID
    [{"info": {"id": "msg_1"}, "parts": [{"messageID": "msg_1"}]}],  # a part without its id
]


@pytest.mark.parametrize("body", MALFORMED_LISTS)
async def test_a_message_list_the_mirror_cannot_use_is_malformed(body: Any) -> None:
    async def answer(request: Request) -> Response:
        return JSONResponse(body)

    with serve_in_thread(Starlette(routes=[Route("/session/{id}/message", answer)])) as url:
        async with OpenCodeClient(url) as oc:
            with pytest.raises(OpenCodeError, match=r"malformed response from OpenCode: .*unexpected shape"):
                await oc.messages("ses_x")


async def test_one_entry_of_another_shape_in_an_instance_wide_list_is_passed_over_not_the_whole_list() -> None:
    """`GET /session/status`, `/permission` and `/question` hold every session of the server: one odd entry made
    the whole body malformed, so no session there read its status, and none got its answers."""
    good_request = {"id": "per_1", "sessionID": "ses_a", "permission": "bash"}
    bodies = {
        "/session/status": {"ses_a": {"type": "busy"}, "ses_b": "busy", "ses_c": {"no": "type"}},
        "/permission": [good_request, {"id": "per_2"}, {"id": 5, "sessionID": "ses_b"}, "per_3", None],
        "/question": [["q"], {"id": "que_1", "sessionID": "ses_a"}],
    }

    async def answer(request: Request) -> Response:
        return JSONResponse(bodies[request.url.path])

    with serve_in_thread(Starlette(routes=[Route(path, answer) for path in bodies])) as url:
        async with OpenCodeClient(url) as oc:
            with structlog.testing.capture_logs() as logs:
                assert await oc.status() == {"ses_a": {"type": "busy"}}
                assert await oc.permissions() == [good_request]
                assert await oc.questions() == [{"id": "que_1", "sessionID": "ses_a"}]
    passed_over = [(e["url"], e["entries"]) for e in logs if e["event"] == "opencode_entries_passed_over"]
    assert passed_over == [(f"{url}/session/status", 2), (f"{url}/permission", 4), (f"{url}/question", 1)]


async def test_a_well_formed_message_list_is_returned_as_is() -> None:
    body = [{"info": {"id": "msg_1"}, "parts": [{"id": "prt_1", "messageID": "msg_1", "type": "text"}]}]

    async def answer(request: Request) -> Response:
        return JSONResponse(body)

    with serve_in_thread(Starlette(routes=[Route("/session/{id}/message", answer)])) as url:
        async with OpenCodeClient(url) as oc:
            assert await oc.messages("ses_x") == body


async def test_a_body_or_event_past_the_bound_is_an_error_naming_the_variable() -> None:
    """However OpenCode answers (a GET, a POST, an `/event` record that never ends), a body past the bound is
    OpenCodeError naming OPENCODE_MAX_RESPONSE_BYTES, not read on; a body within it is read as before."""
    text = "x" * 10_000
    listed = [{"info": {"id": "msg_1"}, "parts": [{"id": "prt_1", "messageID": "msg_1", "type": "text", "text": text}]}]

    async def messages(request: Request) -> Response:
        return JSONResponse(listed if request.query_params.get("limit") != "1" else [])

    async def abort(request: Request) -> Response:
        return JSONResponse(text)

    async def events(request: Request) -> Response:
        async def endless() -> AsyncIterator[bytes]:
            yield b'data: {"type":"server.connected","properties":{}}\n\n'
            while True:
                yield b"data: " + b"x" * 1024
                await anyio.lowlevel.checkpoint()

        return StreamingResponse(endless(), media_type="text/event-stream")

    routes = [Route("/session/{id}/message", messages), Route("/session/{id}/abort", abort, methods=["POST"])]
    with serve_in_thread(Starlette(routes=[*routes, Route("/event", events)])) as url:
        async with OpenCodeClient(url, max_body_bytes=4096) as oc:
            assert await oc.messages("ses_x", limit=1) == []
            too_large = r"with more than 4096 bytes \(OPENCODE_MAX_RESPONSE_BYTES\): not read"
            for call in (lambda: oc.messages("ses_x"), lambda: oc.abort("ses_x")):
                with pytest.raises(OpenCodeError, match=too_large):
                    await call()
            seen = []
            with pytest.raises(OpenCodeError, match=too_large):
                async for event in oc.events():
                    seen.append(event["type"])
            assert seen == ["server.connected"]
        async with OpenCodeClient(url) as oc:
            assert await oc.messages("ses_x") == listed


async def test_closed_client_refuses_calls(sim_url: str) -> None:
    oc = OpenCodeClient(sim_url)
    assert (await oc.health())["healthy"] is True  # the session is created lazily
    await oc.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await oc.health()
    async with OpenCodeClient(sim_url) as again:
        pass
    with pytest.raises(RuntimeError):
        await again.status()


DEEP = b"[" * 1100 + b"]" * 1100  # past orjson's 1,024 levels and the standard library's recursion limit


async def test_json_nested_past_any_parser_is_malformed_not_a_crash() -> None:
    """A body (or `/event` record, or error body) nested deeper than can be read is malformed like any other bad
    JSON. Was: a RecursionError, which the status board and the event stream let through to end the replica."""

    async def deep(request: Request) -> Response:
        return Response(DEEP, media_type="application/json")

    async def failing(request: Request) -> Response:
        return Response(DEEP, status_code=500, media_type="application/json")

    async def events(request: Request) -> Response:
        async def records() -> AsyncIterator[bytes]:
            yield b'data: {"type":"server.connected","properties":{}}\n\n'
            yield b'data: {"type":"message.updated","properties":{"x":' + DEEP + b"}}\n\n"
            yield b'data: {"type":"session.idle","properties":{"sessionID":"ses_x"}}\n\n'

        return StreamingResponse(records(), media_type="text/event-stream")

    routes = [Route("/session/status", deep), Route("/session/{id}/message", deep), Route("/permission", deep)]
    routes += [Route("/session/{id}/abort", failing, methods=["POST"]), Route("/event", events)]
    with serve_in_thread(Starlette(routes=routes)) as url:
        async with OpenCodeClient(url) as oc:
            calls: list[Callable[[], Awaitable[object]]] = [oc.status, oc.permissions, lambda: oc.messages("ses_x")]
            calls.append(lambda: oc.messages_if_changed("ses_x", limit=4, digest=None))
            for call in calls:
                with pytest.raises(OpenCodeError, match=r"malformed response from OpenCode: .*not JSON"):
                    await call()
            with pytest.raises(OpenCodeError, match=r"with 500: '\[\[\[") as failed:
                await oc.abort("ses_x")
            assert failed.value.detail is None
            seen = []
            with pytest.raises(Unavailable, match="closed GET /event"):  # the records ran out
                async for event in oc.events():
                    seen.append(event["type"])
            # the deep one comes as unreadable (the router marks a gap: it may have been a delta), the next is read
            assert seen == ["server.connected", UNREADABLE, "session.idle"]


def test_loads_refuses_json_nested_too_deeply_as_not_json() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        loads(DEEP)
    value, depth = loads(b"[" * 1000 + b"]" * 1000), 1  # past orjson's reach, within the standard library's: read
    while value != []:
        value, depth = value[0], depth + 1
    assert depth == 1000
