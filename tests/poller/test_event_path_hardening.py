"""The `/event` fast path against a hostile or unusual OpenCode: records repeated, reordered, lost mid-batch, for
parts not known yet or gone, rewritten texts, other sessions' records. The live text is only ever a beginning of
what OpenCode wrote."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
import pytest

from poller import events as events_module
from poller.event_apply import apply_events, streaming_keys
from poller.events import EventRouter, Inbox
from poller.mirror import Mirror
from shared.errors import Unavailable
from shared.opencode.client import UNREADABLE, OpenCodeClient
from tests.helpers import wait_for

SID = "ses_x"
_ids = iter(range(1, 1_000_000))


def evt() -> str:
    """OpenCode's event ids ascend (`evt_` + 12 hex of time and counter + 14 base62)."""
    return f"evt_{next(_ids):012x}AAAAAAAAAAAAAA"


def text_part(text: str, end: bool = False, pid: str = "prt_1", kind: str = "text") -> dict[str, Any]:
    time = {"start": 1, **({"end": 2} if end else {})}
    return {"id": pid, "messageID": "msg_1", "sessionID": SID, "type": kind, "text": text, "time": time}


def delta(piece: str, pid: str = "prt_1", mid: str = "msg_1", eid: str | None = None) -> dict[str, Any]:
    props = {"sessionID": SID, "messageID": mid, "partID": pid, "field": "text", "delta": piece}
    return {"id": eid or evt(), "type": "message.part.delta", "properties": props}


def updated(part: dict[str, Any]) -> dict[str, Any]:
    return {"id": evt(), "type": "message.part.updated", "properties": {"sessionID": SID, "part": part}}


def mirror_with(*parts: dict[str, Any]) -> Mirror:
    return Mirror.of([{"info": {"id": "msg_1", "sessionID": SID, "role": "assistant"}, "parts": list(parts)}])


def run(
    mirror: Mirror,
    batches: list[list[dict[str, Any]]],
    frozen: set[str] | None = None,
    last_ids: dict[str, str] | None = None,
) -> str:
    """Apply each batch as SessionMirror does (a write per batch); the part's text after the last."""
    frozen = frozen if frozen is not None else set()
    last_ids = last_ids if last_ids is not None else {}
    for batch in batches:
        mirror.apply(apply_events(mirror, batch, frozen, last_ids))
    return str(mirror.parts["msg_1/prt_1"]["text"])


def test_a_delta_record_that_comes_twice_is_appended_once() -> None:
    """Was: "Hello" + "lo" again: `Hellolo`, a text OpenCode never wrote (a proxy or a replayed record)."""
    first = delta("Hel")
    again = delta("lo")
    assert run(mirror_with(text_part("")), [[first, again, again]]) == "Hello"
    assert run(mirror_with(text_part("")), [[first, again], [again, delta("!")]]) == "Hello!"
    assert run(mirror_with(text_part("")), [[first], [again, first, again]]) == "Hello"


def test_deltas_out_of_order_never_reorder_the_text() -> None:
    """Deltas carry no offset: one that comes after a later one cannot be placed. Was: "Hel" + "!" + "lo"."""
    first, second, third = delta("Hel"), delta("lo"), delta("!")
    text = run(mirror_with(text_part("")), [[first, third, second], [delta(" more")]])
    assert "Hello! more".startswith(text), text
    done = updated(text_part("Hello! more", end=True))
    assert run(mirror_with(text_part("")), [[first, third, second], [done]]) == "Hello! more"


def test_deltas_that_came_before_the_part_keep_it_frozen_through_its_start() -> None:
    """A delta for a part not known yet is lost; the part's start ("" stored) must not let the next deltas build a
    text without its beginning. Was: "nswer" shown for "Slow answer"."""
    mirror = Mirror.of([{"info": {"id": "msg_1", "sessionID": SID, "role": "assistant"}, "parts": []}])
    frozen: set[str] = set()
    text = run(mirror, [[delta("Slow a"), updated(text_part("")), delta("nswer")]], frozen)
    assert "Slow answer".startswith(text), text
    assert run(mirror, [[updated(text_part("Slow answer", end=True))]], frozen) == "Slow answer"
    assert frozen == set()


def test_a_delta_after_its_part_was_removed_does_not_bring_the_old_text_back() -> None:
    """Removed, then a delta, then the part again from "": was the removed part's text + the delta."""
    props = {"sessionID": SID, "messageID": "msg_1", "partID": "prt_1"}
    removed = {"type": "message.part.removed", "properties": props}
    mirror = mirror_with(text_part("old text"))
    text = run(mirror, [[removed, delta(" more"), updated(text_part("")), delta("new")]])
    assert "new".startswith(text) or text == "", text
    assert run(mirror, [[updated(text_part("new", end=True))]]) == "new"


@pytest.mark.parametrize(
    "part",
    [
        {"id": "prt_1", "messageID": "msg_1", "sessionID": SID, "type": "tool", "state": {"status": "running"}},
        {"id": "prt_1", "messageID": "msg_1", "sessionID": SID, "type": "text", "text": "a prompt"},  # untimed
        {"id": "prt_1", "messageID": "msg_1", "sessionID": SID, "type": "step-start"},
    ],
    ids=["tool", "user-text", "step-start"],
)
def test_deltas_extend_only_a_streaming_text(part: dict[str, Any]) -> None:
    """OpenCode streams text and reasoning parts; a delta to any other part (or one whose type changed) was
    appended as a `text` OpenCode never stored for it."""
    mirror = mirror_with(part)
    assert not apply_events(mirror, [delta("stray")])


def test_a_part_that_changed_type_takes_no_more_deltas() -> None:
    mirror = mirror_with(text_part("Hel"))
    tool = {"id": "prt_1", "messageID": "msg_1", "sessionID": SID, "type": "tool", "state": {"status": "running"}}
    mirror.apply(apply_events(mirror, [updated(tool), delta("lo")]))
    assert mirror.parts["msg_1/prt_1"] == tool


@pytest.mark.parametrize("rewritten", ["Hel", "HeLLo wo"], ids=["shorter", "differs"])
def test_a_streaming_text_opencode_rewrote_is_taken_and_grown_from(rewritten: str) -> None:
    """OpenCode stores "" while a text streams: a stored "" keeps what the deltas built. A text of its own is what
    OpenCode holds now, and the next deltas extend it. Was: "Hello wo" kept, then "Hello wo" + "rld"."""
    text = run(mirror_with(text_part("")), [[delta("Hello wo"), updated(text_part(rewritten)), delta("rld")]])
    assert text == rewritten + "rld"
    assert run(mirror_with(text_part("")), [[delta("Hello"), updated(text_part("")), delta("!")]]) == "Hello!"


def test_records_about_another_sessions_message_change_nothing() -> None:
    """Routed by `properties.sessionID`, a record whose own object names another session is not this one's."""
    other = {"id": "msg_9", "sessionID": "ses_other", "role": "assistant"}
    info = {"id": evt(), "type": "message.updated", "properties": {"sessionID": SID, "info": other}}
    part = {**text_part("theirs", end=True), "messageID": "msg_1", "sessionID": "ses_other"}
    assert not apply_events(mirror_with(text_part("")), [info, updated(part)])


class ScriptedEvents:
    """An OpenCode whose `/event` connections play scripted records; a connection's script ends with a drop."""

    def __init__(self, connections: list[list[dict[str, Any]]]) -> None:
        self._connections = connections
        self.opened = 0
        self.finished = anyio.Event()

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        self.opened += 1
        if self.opened > len(self._connections):
            self.finished.set()
            await anyio.sleep_forever()
        for record in self._connections[self.opened - 1]:
            yield record
        raise Unavailable("OpenCode closed GET /event")


async def route(monkeypatch: pytest.MonkeyPatch, connections: list[list[dict[str, Any]]]) -> Inbox:
    """Play the connections through a real EventRouter into an inbox nobody takes from meanwhile."""
    monkeypatch.setattr(events_module, "RECONNECT_BASE_S", 0.001)
    opencode = ScriptedEvents(connections)
    router = EventRouter(cast(OpenCodeClient, opencode))
    inbox = Inbox()
    router.attach(SID, inbox)
    async with anyio.create_task_group() as tg:
        tg.start_soon(router.run)

        async def played() -> bool:
            return opencode.finished.is_set()

        await wait_for(played, timeout=10, what="every connection played")
        tg.cancel_scope.cancel()
    return inbox


def connected() -> dict[str, Any]:
    return {"type": "server.connected", "properties": {}}


@pytest.mark.anyio
@pytest.mark.parametrize("announced", [True, False], ids=["connected", "unannounced"])
async def test_a_drop_while_deltas_wait_freezes_the_text_where_they_were_lost(
    monkeypatch: pytest.MonkeyPatch, announced: bool
) -> None:
    """The stream drops after "Slow a" while the tracker has not taken it yet; "nsw" is lost; "er" comes after the
    reconnect, in the same batch. Was: the gap froze only the parts known before the batch: "Slow a" + "er"."""
    hello = [connected()] if announced else []
    inbox = await route(
        monkeypatch,
        [
            [*hello, updated(text_part("")), delta("Slow"), delta(" a")],  # "nsw" goes by while it is down
            [connected(), delta("er")],
        ],
    )
    gap, inbox.gap = inbox.gap, False  # as the tracker takes them
    mirror = Mirror.of([{"info": {"id": "msg_1", "sessionID": SID, "role": "assistant"}, "parts": []}])
    frozen: set[str] = set()
    if gap:  # as SessionMirror.write_events does
        frozen |= streaming_keys(mirror)
    text = run(mirror, [inbox.take()], frozen)
    assert "Slow answer".startswith(text), text
    assert run(mirror, [[updated(text_part("Slow answer", end=True))]], frozen) == "Slow answer"


@pytest.mark.anyio
async def test_an_unreadable_record_freezes_the_texts_it_may_have_grown(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record whose data is not JSON (a broken proxy, a cut) may have been a delta: the texts streaming when it
    came stop growing, as after a drop, and the stream goes on. Was: dropped silently, the text grew past it."""
    inbox = await route(
        monkeypatch,
        [[connected(), updated(text_part("")), delta("Slow"), {"type": UNREADABLE}, delta("er")]],  # " answ" lost
    )
    gap, inbox.gap = inbox.gap, False
    mirror = Mirror.of([{"info": {"id": "msg_1", "sessionID": SID, "role": "assistant"}, "parts": []}])
    frozen: set[str] = set()
    if gap:
        frozen |= streaming_keys(mirror)
    text = run(mirror, [inbox.take()], frozen)
    assert text == "Slow"
    assert run(mirror, [[updated(text_part("Slow answer", end=True))]], frozen) == "Slow answer"
