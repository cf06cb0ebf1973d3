"""Edits of what a session stores, on the real server and on the simulator: the same answers, the same events.

A client (or OpenCode's own compaction) may change a session's older messages at any time it is idle: `PATCH` or
`DELETE` a part, `DELETE` a message. The poller's whole-list polls must see such edits even when they decode only
the newest messages (`shared.opencode.settled`), and the tests that show it run on the simulator: so its answers
are checked here against `opencode serve`'s. The real server's bytes are also where a settled head is found.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from shared.ids import new_message_id
from shared.opencode.client import OpenCodeClient
from tests.helpers import wait_for
from tests.realopencode.harness import RealOpenCode

pytestmark = [pytest.mark.anyio, pytest.mark.realopencode]

UNKNOWN_PART = "prt_0000000000000000000000000z"
# what edits publish (the run's own late records, e.g. a `message.updated` of its summary, are not counted)
EDIT_EVENTS = ("message.part.updated", "message.part.removed", "message.removed")


async def answered(opencode: OpenCodeClient, text: str) -> str:
    """A new session whose prompt has been answered and which is idle again."""
    session = await opencode.create_session()
    sid = session["id"]
    await opencode.prompt_async(sid, message_id=new_message_id(), text=text)

    async def idle() -> bool:
        messages = await opencode.messages(sid)
        done = len(messages) == 2 and "completed" in messages[-1]["info"]["time"]
        return done and sid not in await opencode.status()

    await wait_for(idle, timeout=30, what=f"the answer to {text!r}")
    return str(sid)


def shape(value: Any) -> Any:
    """Keys and types, with the error texts and ids that differ between two servers left out."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items()) if k not in ("message", "sessionID", "ref")}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


async def edits(url: str) -> dict[str, Any]:
    """The same edits on one server: each answer's status and shape, the events of the session, the list after."""
    seen: list[dict[str, Any]] = []
    connected = anyio.Event()  # OpenCode sends no backlog: what comes after this is what the edits caused
    async with OpenCodeClient(url) as opencode, httpx.AsyncClient(base_url=url, timeout=10) as http:
        sid = await answered(opencode, "ECHO a message to edit")
        user, answer = await opencode.messages(sid)
        text = next(p for p in answer["parts"] if p["type"] == "text")
        part = f"/session/{sid}/message/{answer['info']['id']}/part/{text['id']}"
        async with anyio.create_task_group() as tg:

            async def collect() -> None:
                async for event in opencode.events():
                    if event.get("type") == "server.connected":
                        connected.set()
                    elif event["type"] in EDIT_EVENTS and event["properties"].get("sessionID") == sid:
                        seen.append(event)

            async def arrived(count: int) -> bool:
                return len(seen) >= count

            tg.start_soon(collect)
            with anyio.fail_after(10):
                await connected.wait()
            answers = [
                await http.patch(part, json={**text, "text": "edited"}),
                await http.patch(part, json={**text, "id": UNKNOWN_PART}),  # ids that differ from the path's
                await http.patch(part, json={"text": "no ids"}),
                await http.delete(f"/session/{sid}/message/{answer['info']['id']}/part/{UNKNOWN_PART}"),
                await http.delete(f"/session/{sid}/message/{user['info']['id']}"),
                await http.delete(f"/session/ses_unknown00000000000000000/message/{user['info']['id']}"),
                await http.patch(part, json={**text, "text": "edited"}),  # the last event: the others came before
            ]
            await wait_for(lambda: arrived(4), timeout=10, what="the edits' events")
            tg.cancel_scope.cancel()
        after = await opencode.messages(sid)
        busy = await opencode.create_session()
        await opencode.prompt_async(busy["id"], message_id=new_message_id(), text="SLOW answer")
        await wait_for(lambda: _busy(opencode, busy["id"]), timeout=10, what="a busy session")
        [first] = (await opencode.messages(busy["id"]))[:1]
        refused = await http.delete(f"/session/{busy['id']}/message/{first['info']['id']}")
        await opencode.abort(busy["id"])
    return {
        "answers": [(a.status_code, shape(a.json())) for a in answers],
        "texts": [[(p["type"], p.get("text")) for p in m["parts"]] for m in after],
        "events": [e["type"] for e in seen],
        "busy": (refused.status_code, shape(refused.json())),
    }


async def _busy(opencode: OpenCodeClient, sid: str) -> bool:
    return sid in await opencode.status() and len(await opencode.messages(sid)) >= 1


async def test_edits_of_stored_messages_answer_and_publish_on_the_simulator_as_on_the_real_server(
    real_opencode: RealOpenCode, simulator_url: str
) -> None:
    real, simulated = await edits(real_opencode.url), await edits(simulator_url)
    assert real["texts"] == [[("step-start", None), ("text", "edited"), ("step-finish", None)]]
    edited, removed = "message.part.updated", ["message.part.removed", "message.removed"]
    assert real["events"] == [edited, *removed, edited]
    assert real["busy"][0] == 409
    assert simulated == real


async def test_a_settled_head_is_found_in_the_real_servers_bytes(real_opencode: RealOpenCode) -> None:
    """The head ends where the real server writes `,{"info":{"id":"msg_…"`: a second whole list of an unchanged
    session decodes only its newest message."""
    async with OpenCodeClient(real_opencode.url) as opencode:
        sid = await answered(opencode, "ECHO settle")
        first = await opencode.messages_beyond(sid, None, unsettled=1)
        assert first.skipped == 0 and first.head is not None and first.head.count == 1
        again = await opencode.messages_beyond(sid, first.head, unsettled=1)
        assert (again.skipped, again.messages) == (1, first.messages[1:])
