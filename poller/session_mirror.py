"""One session's mirror kept in step with OpenCode: fetched by polls (a tail, or the whole list), advanced by
events, and every change written to Redis through the fenced StateWriter."""

from __future__ import annotations

import random
from typing import Any

import structlog

from poller.deps import TrackerDeps
from poller.event_apply import any_streaming, apply_events, keep_streamed_texts, streaming, streaming_keys
from poller.mirror import Delta, Mirror, diff, merge_tail, share_unchanged, with_appends
from poller.writer import StateWriter
from shared.config import DEFAULT_SERVER
from shared.errors import LeaseLost
from shared.models import part_key
from shared.opencode.settled import SettledHead
from shared.store.lease import Lease
from shared.store.live import LiveState, read_record
from shared.usage import Usage

log = structlog.get_logger(__name__)

TAIL_LIMIT = 4  # a poll fetches the newest messages only; more new ones than this fall back to a full poll
FULL_POLL_EVERY = 20  # ...and every 20th poll (10 s at 500 ms) fetches the whole list


class SessionMirror:
    """What Redis holds for the session (`mirror`, `session`), and OpenCode's whole list as last polled."""

    def __init__(
        self, deps: TrackerDeps, lease: Lease, session: LiveState, mirror: Mirror, *, spread: int | None = None
    ) -> None:
        self._deps = deps
        self._lease = lease
        self.session = session
        self.mirror = mirror
        self.writer = StateWriter(deps.scripts, session)  # its seq starts at the loaded one
        self.messages: list[Any] = []
        self._polls_since_full = 0
        self._full_poll_due = True  # the first poll fetches the whole list
        # ...and the second comes 1 to FULL_POLL_EVERY polls later, at random (or `spread` polls sooner than
        # FULL_POLL_EVERY, when given): sessions that start together (a takeover's claim, a replica's start) would
        # otherwise take their whole lists in the same second for as long as they live, the cadence being drift-free.
        # At 8,000 sessions started at once, a 15 s benchmark window then held 77 whole-list polls where the steady
        # state has ~3,000 (0.76 cores measured, 0.85 real).
        self._first_full_offset = random.randrange(FULL_POLL_EVERY) if spread is None else spread
        # the last tail poll's body digest and list, while nothing but polls has written the mirror since:
        # a tail that comes back byte for byte the same then changes nothing and is neither decoded nor compared
        self._tail_digest: int | None = None
        # how many messages that tail held (its messages end the list), and this poll's digest, kept once its write
        # succeeded: plain ints, where a list and a tuple per changed poll lived until the next one (young at every
        # collection, one of each per session)
        self._last_tail_len = 0
        self._fetched: int | None = None
        self._unchanged = False
        # the whole list's settled messages as bytes (shared.opencode.settled): a whole-list poll whose body begins
        # with them decodes and compares only the rest. `_settled_end` is the last of them in `messages`, which tells
        # that the list still begins with the very objects they were decoded into
        self._head: SettledHead | None = None
        self._settled_end: Any = None
        # ...and whether none of them has a part still streaming (none can start to while their bytes stay the same):
        # then the streamed texts need not be looked for in them
        self._head_plain = False
        # the texts still streaming when this mirror was loaded (a takeover, a claim after a failure) missed the
        # deltas sent since their last write: they stop growing until OpenCode stores them whole, as after a stream
        # drop. Was: the deltas after a takeover were appended to the text left ("Slow" + "wer to: …")
        self._frozen_parts: set[str] = streaming_keys(mirror)
        # the id of each streaming part's last applied `/event` record: a record that comes twice is dropped, one
        # older than the last freezes its part (event_apply.apply_events)
        self._last_ids: dict[str, str] = {}
        # this session's metric children, found once: labels() takes a lock and a lookup, on every poll and write
        metrics, server = deps.metrics, deps.server
        self._polls = metrics.polls.labels(server)
        self._polls_unchanged = metrics.polls_unchanged.labels(server)
        self._polls_settled = metrics.polls_settled.labels(server)
        self._poll_writes = metrics.state_writes.labels(server, "poll")
        self._event_writes = metrics.state_writes.labels(server, "event")
        self._poll_corrections = metrics.poll_corrections.labels(server)

    @classmethod
    async def load(cls, deps: TrackerDeps, lease: Lease, *, spread: int | None = None) -> SessionMirror:
        """Start from what Redis holds, so the first diff writes only what differs from it."""
        record = await read_record(deps.redis, lease.session_id)
        if record is None:
            raise LeaseLost("the session has no live state (Redis lost it; the backstop will re-queue it)")
        mirror = Mirror(infos=record.infos, parts=record.parts, tool_calls=record.state.current_tool_calls)
        loaded = cls(deps, lease, record.state, mirror, spread=spread)
        if record.state.server is None and deps.server != DEFAULT_SERVER:
            # a session that names no server runs on the first one: readers that find no name say `default`,
            # which names no server here (a `default` must be the first). Was: `status`, `--server` and the live
            # list's server filter missed it.
            loaded.session = await loaded.writer.name_server(lease, deps.server)
        return loaded

    def full_poll_next(self) -> None:
        """Decide, and archive, on the whole list: the next poll fetches it."""
        self._full_poll_due = True

    def _usage_after(self, delta: Delta) -> Usage | None:
        """The session's usage once the delta is written; None when no message info changes (text deltas)."""
        if not delta.infos and not delta.removed_messages:
            return None
        infos = {**self.mirror.infos, **{info["id"]: info for info in delta.infos}}
        for message_id in delta.removed_messages:
            infos.pop(message_id, None)
        return Usage.of_infos(infos.values())

    async def fetch(self) -> tuple[list[Any], list[Any] | None]:
        """The whole list, and the tail it came from when only the newest messages were fetched.

        A tail poll (`?limit=`) costs the same at 200 messages as at 2; the whole list is fetched on the first
        poll, every FULL_POLL_EVERY polls (OpenCode may still change older messages, e.g. compaction), when
        the tail does not overlap the last list, and before a session is archived. Of a whole list, only what
        follows its settled head is decoded while the older messages are byte for byte as held.
        """
        opencode, sid = self._deps.opencode, self._lease.session_id
        self._polls.inc()
        self._polls_since_full += 1
        self._unchanged, self._fetched = False, None
        if not self._full_poll_due and self._polls_since_full < FULL_POLL_EVERY:
            tail, digest = await opencode.messages_if_changed(sid, limit=TAIL_LIMIT, digest=self._tail_digest)
            if tail is None:
                self._unchanged = True
                self._polls_unchanged.inc()
                return self.messages, self.messages[len(self.messages) - self._last_tail_len :]
            held = self._held_head()
            start = max(len(self.messages) - 2 * TAIL_LIMIT, held.count if held is not None else 0)
            tail = share_unchanged(self.messages[start:], tail, self.mirror)  # never updates a settled one in place
            merged = merge_tail(self.messages, tail, TAIL_LIMIT)
            if merged is not None:
                self._fetched = digest
                return merged, tail
        # in place, as merge_tail does: a new whole list per full poll lived until the next one, young at every
        # collection with a reference to every message (at 8,000 sessions, about a quarter of the references a
        # sampled young collection followed)
        whole = await opencode.messages_beyond(sid, self._held_head(), unsettled=TAIL_LIMIT)
        kept = whole.skipped  # the settled messages, as they were: neither decoded nor compared
        if kept:
            self._polls_settled.inc()
        self.messages[kept:] = share_unchanged(self.messages[kept:], whole.messages, self.mirror)
        self._head = head = whole.head
        self._settled_end = self.messages[head.count - 1] if head is not None else None
        self._head_plain = (
            head is not None and (self._head_plain or not kept) and not any_streaming(self.messages[kept : head.count])
        )
        self._polls_since_full, self._first_full_offset = self._first_full_offset, 0
        self._full_poll_due = False
        self._tail_digest = None
        return self.messages, None

    def _held_head(self) -> SettledHead | None:
        """The settled head while `messages` still begins with what it was decoded into (a tail poll that reached
        back into it, after messages were removed, replaced them)."""
        head = self._head
        if head is None or len(self.messages) < head.count or self.messages[head.count - 1] is not self._settled_end:
            return None
        return head

    async def write_poll(self, messages: list[Any], tail: list[Any] | None) -> None:
        """Write what a fetch changed; `messages` becomes the list the session is decided on."""
        if self._unchanged:
            return  # the same tail as the last poll, and nothing else wrote the mirror since: nothing changed
        router = self._deps.router
        polled = tail if tail is not None else messages
        # what our deltas built of a still-streaming part is ahead of OpenCode's stored "": keep it
        plain = self._head.count if tail is None and self._head is not None and self._head_plain else 0
        mirrored = keep_streamed_texts(self.mirror, polled, plain) if router is not None else polled
        delta = diff(self.mirror, mirrored, partial=tail is not None)
        if delta:  # an unchanged poll writes nothing and publishes nothing
            await self.writer.apply(self._lease, with_appends(self.mirror, delta), usage=self._usage_after(delta))
            self._poll_writes.inc()
            if router is not None and router.healthy:
                self._poll_corrections.inc()
            if tail is None:
                self.mirror.update(mirrored)
            else:
                self.mirror.update_tail(mirrored)
        self.messages = messages
        if self._fetched is not None and tail is not None:  # written: the same tail next time changes nothing
            self._tail_digest, self._last_tail_len = self._fetched, len(tail)

    async def write_events(self, events: list[Any], *, gap: bool) -> None:
        """The fast path: the same fenced write as a poll, so clients see one seq stream either way.

        `gap`: deltas were lost while the stream was down; the texts they were building stop growing.
        Raises Unavailable when Redis refuses the write (the next poll writes the truth).
        """
        if gap:
            self._frozen_parts |= streaming_keys(self.mirror)
        delta = apply_events(self.mirror, events, self._frozen_parts, self._last_ids)
        if not delta:
            return
        self._tail_digest = None  # the mirror moved on its own: the next poll compares it in full
        try:
            await self.writer.apply(self._lease, with_appends(self.mirror, delta), usage=self._usage_after(delta))
        except BaseException:
            # the batch's deltas are lost with its write: the texts they grew must not grow past the hole. Was: the
            # next batch's deltas were appended to the text before this one ("Slow a" + "er")
            self._frozen_parts |= {part_key(part) for part in delta.parts if streaming(part)}
            raise
        self.mirror.apply(delta)
        self._event_writes.inc()
