"""The event path end to end through Redis, against a model of OpenCode whose `/event` stream misbehaves: records
repeated, swapped or lost (the stream drops), texts rewritten, parts removed, pieces that split a character, NULs,
quotes. At every write the live text is a beginning of a text OpenCode held; at the end the live state, the list a
session is archived with and a client that followed every published update all equal OpenCode's own list."""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any

import anyio
import psycopg_pool
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from poller.archive import Archive
from poller.deps import TrackerDeps
from poller.events import EventRouter, Inbox
from poller.job_board import JobBoard
from poller.metrics import Metrics
from poller.session_mirror import SessionMirror
from poller.status_board import StatusBoard
from shared.cli.stream import StreamGap, apply_update
from shared.errors import Unavailable
from shared.models import dumps, loads
from shared.opencode.client import OpenCodeClient
from shared.store import keys
from shared.store.lease import Lease
from shared.store.live import read_record
from shared.store.lua import PartAppend, Scripts, StateChange
from shared.usage import Usage
from tests.store.lua.helpers import SID, enqueue

pytestmark = pytest.mark.anyio

PIECES = ["Hel", "lo", " ", "wörld", "\U0001f600", "\ud83d", "\ude00", "\x00", '"q"', "\\", "\n", "\u2028", "x" * 40]


def same(value: Any) -> Any:
    """As any JSON reader gets it back (a surrogate pair split across deltas is one character again)."""
    return loads(dumps(value))


def units(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


class OpenCode:
    """What a session's OpenCode holds (texts stored "" while they stream), and the records its stream sends."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.messages: dict[str, dict[str, Any]] = {}
        self.live: dict[str, str] = {}  # streaming part key -> its text so far
        self.texts: dict[str, list[str]] = {}  # every text a part held before a rewrite, and its last
        self.sent: list[dict[str, Any]] = []
        self._n = 0

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n:012x}AAAAAAAAAAAAAA"

    def _send(self, kind: str, **props: Any) -> None:
        self.sent.append({"id": self._id("evt"), "type": kind, "properties": {"sessionID": SID, **props}})

    def _part(self, part: dict[str, Any]) -> None:
        self.messages[part["messageID"]]["parts"][part["id"]] = part
        self._send("message.part.updated", part=copy.deepcopy(part), time=1)

    def _open(self) -> dict[str, Any] | None:
        return next((m for m in self.messages.values() if "completed" not in m["info"]["time"]), None)

    def step(self) -> None:
        message, rng = self._open(), self.rng
        if message is None:
            info = {"id": self._id("msg"), "sessionID": SID, "role": "assistant", "time": {"created": 1}}
            self.messages[info["id"]] = {"info": info, "parts": {}}
            self._send("message.updated", info=copy.deepcopy(info))
            return
        mid, roll = message["info"]["id"], rng.random()
        streaming = [k for k in self.live if k.startswith(mid + "/")]
        if streaming and roll < 0.6:
            key = rng.choice(streaming)
            piece = rng.choice(PIECES)
            self.live[key] += piece
            _, pid = key.split("/")
            self._send("message.part.delta", messageID=mid, partID=pid, field="text", delta=piece)
        elif streaming and roll < 0.7:
            self._end(message, rng.choice(streaming))
        elif streaming and roll < 0.73 and self.live[(key := rng.choice(streaming))]:
            # OpenCode rewrote what it holds: shorter, or changed in the middle (to "" it would read as the "" a
            # streaming text is stored as, whose deltas' text is kept)
            text = self.live[key]
            cut = rng.randrange(1, len(text) + 1)
            self.texts[key].append(text)
            self.live[key] = text[:cut] if rng.random() < 0.5 else text[:cut] + "~" + text[cut + 1 :]
            part = {**message["parts"][key.split("/")[1]], "text": self.live[key]}
            self._part(part)
        elif roll < 0.8:
            kind = rng.choice(["text", "text", "reasoning"])
            part = {"id": self._id("prt"), "messageID": mid, "sessionID": SID, "type": kind}
            self._part({**part, "text": "", "time": {"start": 1}})
            self.live[f"{mid}/{part['id']}"] = ""
            self.texts[f"{mid}/{part['id']}"] = []
        elif roll < 0.86:
            part = {"id": self._id("prt"), "messageID": mid, "sessionID": SID, "type": "tool", "callID": "c"}
            for status in ("pending", "running", "completed"):
                self._part({**part, "state": {"status": status}})
        elif roll < 0.89 and message["parts"]:
            pid = rng.choice(sorted(message["parts"]))
            del message["parts"][pid]
            if f"{mid}/{pid}" in self.live:
                self.texts[f"{mid}/{pid}"].append(self.live.pop(f"{mid}/{pid}"))
            self._send("message.part.removed", messageID=mid, partID=pid)
        elif not streaming and roll > 0.95:
            self.complete(message)

    def _end(self, message: dict[str, Any], key: str) -> None:
        text = self.live.pop(key)
        self.texts[key].append(text)
        part = message["parts"][key.split("/")[1]]
        self._part({**part, "text": text, "time": {"start": 1, "end": 2}})

    def complete(self, message: dict[str, Any]) -> None:
        for key in [k for k in self.live if k.startswith(message["info"]["id"] + "/")]:
            self._end(message, key)
        message["info"] = {**message["info"], "time": {"created": 1, "completed": 2}, "finish": "stop"}
        self._send("message.updated", info=copy.deepcopy(message["info"]))

    def listed(self) -> list[Any]:
        """`GET /session/{id}/message`: streaming texts as "", in id order, as a JSON reader gets it."""
        out = []
        for mid in sorted(self.messages):
            parts = [self.messages[mid]["parts"][pid] for pid in sorted(self.messages[mid]["parts"])]
            parts = [{**p, "text": ""} if f"{mid}/{p['id']}" in self.live else p for p in parts]
            out.append({"info": self.messages[mid]["info"], "parts": parts})
        return same(out)

    def shown_ok(self, key: str, text: str) -> bool:
        """A text OpenCode sent: the beginning of one the part held."""
        held = [*self.texts.get(key, []), *([self.live[key]] if key in self.live else [])]
        return any(units(t).startswith(units(text)) for t in held)


class Follower:
    """A client of the gateway's stream: a snapshot, then every published update (StreamGap: a fresh snapshot)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.pubsub = redis.pubsub()
        self.state: dict[str, Any] = {}
        self.resyncs = 0

    async def start(self) -> None:
        await self.pubsub.subscribe(keys.updates(SID))
        await self.snapshot()

    async def snapshot(self) -> None:
        record = await read_record(self.redis, SID)
        assert record is not None
        self.state = {"seq": record.state.seq, "messages": record.messages()}

    async def catch_up(self) -> None:
        seq = int(await self.redis.hget(keys.session(SID), "seq") or 0)
        with anyio.fail_after(10):
            while self.state["seq"] < seq:
                message = await self.pubsub.get_message(timeout=1)
                if not message or message["type"] not in ("message", b"message"):
                    continue
                change = loads(message["data"])
                if change["seq"] <= self.state["seq"]:
                    continue
                try:
                    if change["seq"] != self.state["seq"] + 1:
                        raise StreamGap("a gap in seq")
                    apply_update(self.state, change)
                except StreamGap:
                    self.resyncs += 1
                    await self.snapshot()


def deps_for(redis: Redis, scripts: Scripts | None = None) -> TrackerDeps:
    opencode = OpenCodeClient("http://127.0.0.1:9")  # never called: polls are handed the model's list
    return TrackerDeps(
        redis=redis,
        scripts=scripts or Scripts(redis),
        opencode=opencode,
        archive=Archive(psycopg_pool.AsyncConnectionPool("postgresql://unused", open=False)),
        board=StatusBoard(opencode, 1.0),
        jobs=JobBoard(redis),
        poll_interval_s=0.5,
        retry_deadline_s=10.0,
        metrics=Metrics(),
        router=EventRouter(opencode),
    )


async def claimed(redis: Redis) -> Lease:
    await redis.flushdb()
    await enqueue(redis)
    [lease] = await Scripts(redis).claim("replica-test", 60_000, 10)
    return lease


async def check_live(redis: Redis, model: OpenCode) -> None:
    record = await read_record(redis, SID)
    assert record is not None
    for key, part in record.parts.items():
        if part.get("type") in ("text", "reasoning") and key in model.texts:
            assert model.shown_ok(key, part["text"]), (key, part["text"], model.texts[key], model.live.get(key))


async def play(redis: Redis, seed: int, *, steps: int = 160) -> None:
    rng = random.Random(seed)
    model = OpenCode(rng)
    lease = await claimed(redis)
    deps = deps_for(redis)
    mirror = await SessionMirror.load(deps, lease, spread=0)
    assert deps.router is not None
    inbox = Inbox()
    deps.router.attach(SID, inbox)
    deps.router.healthy = True
    follower = Follower(redis)
    await follower.start()

    async def take() -> None:  # as SessionTracker._apply_events
        gap, inbox.gap = inbox.gap, False
        await mirror.write_events(inbox.take(), gap=gap)

    async def poll(whole: bool) -> None:
        listed = model.listed()
        await mirror.write_poll(listed, None if whole or len(listed) < 4 else listed[-4:])

    for _ in range(steps):
        for _ in range(rng.randint(1, 4)):
            model.step()
        roll = rng.random()
        sent, model.sent = model.sent, []
        dropped = roll < 0.08 and bool(sent)
        if dropped:  # the stream drops: the rest of what it was sending is lost
            del sent[rng.randrange(len(sent)) :]
        for index, record in enumerate(sent):
            if rng.random() < 0.05 and index + 1 < len(sent):  # swapped with the next one
                sent[index], sent[index + 1] = sent[index + 1], record
                record = sent[index]
            inbox.put(record)
            if rng.random() < 0.05:
                inbox.put(record)  # the same record again
        if dropped:
            deps.router.healthy = True
            deps.router._dropped()
        if rng.random() < 0.7:
            await take()
        if rng.random() < 0.15:
            await poll(whole=rng.random() < 0.5)
        await check_live(redis, model)
        await follower.catch_up()
    for message in model.messages.values():
        if "completed" not in message["info"]["time"]:
            model.complete(message)
    for record in model.sent:
        inbox.put(record)
    model.sent = []
    await take()
    await check_live(redis, model)
    await poll(whole=True)  # the confirming poll a session is archived on
    final = model.listed()
    assert mirror.messages == final  # what close_out archives
    record = await read_record(redis, SID)
    assert record is not None and record.messages() == final
    await follower.catch_up()
    assert same(follower.state["messages"]) == final
    assert follower.resyncs == 0  # every append fitted what the client held
    await follower.pubsub.aclose()


@pytest.mark.parametrize("seed", range(24))
async def test_a_misbehaving_event_stream_never_shows_text_opencode_did_not_send(redis: Redis, seed: int) -> None:
    await play(redis, seed)


class Outage(Scripts):
    """Our scripts over a real Redis, whose state writes fail while `down` (the connection dropped: Unavailable)."""

    down: set[str] = set()

    async def apply(self, lease: Lease, change: StateChange) -> int:
        if "apply" in self.down:
            raise RedisConnectionError("connection reset by peer")
        return await super().apply(lease, change)

    async def append(self, lease: Lease, updated_at: int, appends: Sequence[PartAppend]) -> int:
        if "append" in self.down:
            raise RedisConnectionError("connection reset by peer")
        return await super().append(lease, updated_at, appends)


def updated(part: dict[str, Any], n: int) -> dict[str, Any]:
    return {"id": f"evt_{n:012x}", "type": "message.part.updated", "properties": {"sessionID": SID, "part": part}}


def delta(piece: str, n: int, pid: str = "prt_1") -> dict[str, Any]:
    props = {"sessionID": SID, "messageID": "msg_1", "partID": pid, "field": "text", "delta": piece}
    return {"id": f"evt_{n:012x}", "type": "message.part.delta", "properties": props}


async def streaming_session(redis: Redis, scripts: Scripts, pid: str = "prt_1") -> tuple[SessionMirror, Follower]:
    """A session whose answer part streams, written by the event path; a client following it."""
    lease = await claimed(redis)
    mirror = await SessionMirror.load(deps_for(redis, scripts), lease, spread=0)
    follower = Follower(redis)
    await follower.start()
    info = {"id": "msg_1", "sessionID": SID, "role": "assistant", "time": {"created": 1}}
    start = {"id": pid, "messageID": "msg_1", "sessionID": SID, "type": "text", "text": "", "time": {"start": 1}}
    message = {"id": "evt_000000000001", "type": "message.updated", "properties": {"sessionID": SID, "info": info}}
    await mirror.write_events([message, updated(start, 2)], gap=False)
    return mirror, follower


async def live_text(redis: Redis, key: str = "msg_1/prt_1") -> str:
    record = await read_record(redis, SID)
    assert record is not None
    return str(record.parts[key]["text"])


async def test_deltas_after_a_batch_whose_write_failed_do_not_grow_the_text_past_it(redis: Redis) -> None:
    """Was: " a" was lost with its write, and "nswer" was appended to "Slow": `Slownswer`."""
    scripts = Outage(redis)
    mirror, follower = await streaming_session(redis, scripts)
    await mirror.write_events([delta("Slow", 3)], gap=False)
    scripts.down = {"apply", "append"}
    with pytest.raises(Unavailable):
        await mirror.write_events([delta(" a", 4)], gap=False)
    scripts.down = set()
    await mirror.write_events([delta("nswer", 5)], gap=False)
    assert "Slow answer".startswith(await live_text(redis))
    end = {**mirror.mirror.parts["msg_1/prt_1"], "text": "Slow answer", "time": {"start": 1, "end": 2}}
    await mirror.write_events([updated(end, 6)], gap=False)
    assert await live_text(redis) == "Slow answer"
    await follower.catch_up()
    assert follower.resyncs == 0 and follower.state["messages"] == (await read_record(redis, SID)).messages()


async def test_an_append_whose_companion_write_failed_is_not_appended_to_again(redis: Redis) -> None:
    """The append went through, the message's change with it did not: the mirror never took the appended text, and
    the writer's own account of the stored part must not pretend it did. Was: the part's end appended " answer" to
    the stored "Slow a": `Slow a answer`, and clients re-synced."""
    scripts = Outage(redis)
    mirror, follower = await streaming_session(redis, scripts)
    await mirror.write_events([delta("Slow", 3)], gap=False)
    info = {"id": "msg_1", "sessionID": SID, "role": "assistant", "time": {"created": 1}, "cost": 1}
    changed = {"id": "evt_000000000005", "type": "message.updated", "properties": {"sessionID": SID, "info": info}}
    scripts.down = {"apply"}
    with pytest.raises(Unavailable):
        await mirror.write_events([delta(" a", 4), changed], gap=False)
    scripts.down = set()
    end = {**mirror.mirror.parts["msg_1/prt_1"], "text": "Slow answer", "time": {"start": 1, "end": 2}}
    await mirror.write_events([updated(end, 6)], gap=False)
    assert await live_text(redis) == "Slow answer"
    await follower.catch_up()
    assert follower.resyncs == 0 and follower.state["messages"] == (await read_record(redis, SID)).messages()


@pytest.mark.parametrize(
    "pid", ['prt_"q', "prt_\\n", "prt_\\u0041", "prt_\x01"], ids=["quote", "backslash", "escape", "control"]
)
async def test_appends_to_a_part_whose_id_needs_escaping_are_published_as_json(redis: Redis, pid: str) -> None:
    """append.lua wrote the ids into the event as they were: a quote or backslash in one made the update unreadable
    (every client of the session dropped and re-synced, for every token)."""
    mirror, follower = await streaming_session(redis, Scripts(redis), pid)
    await mirror.write_events([delta("Hel", 3, pid), delta("lo", 4, pid)], gap=False)
    assert await live_text(redis, f"msg_1/{pid}") == "Hello"
    await follower.catch_up()
    assert follower.resyncs == 0 and follower.state["messages"] == (await read_record(redis, SID)).messages()


async def test_a_status_usage_or_pending_write_that_failed_is_written_by_the_next_try(redis: Redis) -> None:
    """The tracker writes `waiting` and the requests again after a failed write (the events' pending requests, the
    usage of their infos). Was: the writer took them as written before the write, and the retry found nothing
    changed: the live state never showed the session waiting on a person."""
    scripts = Outage(redis)
    lease = await claimed(redis)
    mirror = await SessionMirror.load(deps_for(redis, scripts), lease, spread=0)
    request = [{"id": "per_1", "kind": "permission", "askedAt": 1}]
    usage = Usage.of_infos([{"id": "msg_1", "role": "assistant", "cost": 0.5, "tokens": {"input": 7, "output": 3}}])
    scripts.down = {"apply"}
    with pytest.raises(Unavailable):
        await mirror.writer.apply(lease, status="waiting", pending=request, usage=usage)
    scripts.down = set()
    await mirror.writer.apply(lease, status="waiting", pending=request, usage=usage)
    record = await read_record(redis, SID)
    assert record is not None
    assert (record.state.status, record.state.pending, record.state.usage) == ("waiting", request, usage)
