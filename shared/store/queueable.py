"""What an archive row must hold to be queued again (the backstop, and `send` or `cancel` reviving a session).

Other backends write these rows too (README: job wire format): each field is checked before Redis is touched, and
one of another shape than ours is InvalidInput naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis

from shared.errors import InvalidInput
from shared.ids import parse_text
from shared.models import part_key, prompt_entry
from shared.opencode.shapes import is_part
from shared.store.archive import LAYER_KEY, ArchiveRow
from shared.store.connections import redis_now_ms

# A run whose live state Redis lost may have gone past the seq and the epoch its row records (its owner records them
# as it claims and as it ends, not between): neither is known, so both are taken from the clock, past any value that
# run reached. Its seq moved once per fenced write, far under LOST_RUN_SEQ_PER_MS a millisecond; its epoch once per
# claim, far under one a millisecond; and it started (from its row, or from such a floor, taken earlier) no later
# than its own queueing, so a floor taken at a later instant is past both. The seq stays under 1e14 (until 2286):
# Lua, which assembles every event, writes a number past that with an exponent.
LOST_RUN_SEQ_PER_MS = 10


def next_seq(layer: Mapping[str, Any]) -> int:
    """The seq a session queued again starts its live state at: past the last one the row records, so that a
    client resuming with a Last-Event-ID of an earlier run never finds it equal to the new run's seq and goes
    without its snapshot. Was: 1, which the earlier run's first update had had too."""
    value = layer.get("seq")
    return value + 1 if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53 else 1


def past_lost_run(row: ArchiveRow, now_ms: int) -> ArchiveRow:
    """The row to queue again once Redis lost its live state, its seq and epoch raised to floors from `now_ms`
    (Redis's clock, the one every replica shares): a client resuming with a Last-Event-ID of the lost run never
    finds it equal to the new run's seq (it would go without its snapshot), and no token of the lost run's owner
    comes back (the same replica claiming again would get the very token its tracker of the lost run still
    writes with). Was: both went on from the row, behind the lost run's. A row whose layer is not of our shape is
    given back as it is, for the queueing to name the field."""
    try:
        layer = layer_of(row)
        epoch = epoch_of(layer)
    except InvalidInput:
        return row
    seq, floor = layer.get("seq"), now_ms * LOST_RUN_SEQ_PER_MS
    if not (isinstance(seq, int) and not isinstance(seq, bool) and floor <= seq < 2**53):
        seq = floor
    user = row.metadata if isinstance(row.metadata, dict) else {}
    return replace(row, metadata={**user, LAYER_KEY: {**layer, "seq": seq, "epoch": max(epoch, now_ms)}})


async def past_any_lost_run(redis: Redis, row: ArchiveRow) -> ArchiveRow:
    """An unfinished row whose live state is gone is a run Redis lost: revived (by `send` or `cancel`) from seq and
    epoch floors past that run's, as the backstop does. Was: from the row's, which a client resuming with an id of
    the lost run, or the lost run's owner, could still hold. An ended row is revived from its own."""
    return past_lost_run(row, await redis_now_ms(redis)) if row.unfinished else row


def json_kind(value: object) -> str:
    """What a JSON value is, for a message about a field of the wrong shape."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return f"the number {value!r}"


def layer_of(row: ArchiveRow) -> dict[str, Any]:
    """Our bookkeeping in the row: none when the metadata or the key is NULL; InvalidInput when either is not a
    JSON object (the poller's own writes of the row would fail on it)."""
    if row.metadata is None:
        return {}
    if not isinstance(row.metadata, dict):
        raise InvalidInput(f"metadata is {json_kind(row.metadata)}, not a JSON object")
    layer = row.metadata.get(LAYER_KEY)
    if layer is None:
        return {}
    if not isinstance(layer, dict):
        raise InvalidInput(f"metadata.{LAYER_KEY} is {json_kind(layer)}, not a JSON object")
    return layer


def check_title(layer: Mapping[str, Any]) -> None:
    """A string the job can carry: not a lone surrogate (the archive keeps one, escaped), which Redis's enqueue
    script refuses on every attempt to queue the row."""
    title = layer.get("title")
    if title is None:
        return
    if not isinstance(title, str):
        raise InvalidInput(f"metadata.{LAYER_KEY}.title is {json_kind(title)}, not a string")
    parse_text(title, f"metadata.{LAYER_KEY}.title")


def check_fields(fields: Mapping[str, str]) -> None:
    """The job's or the live state's fields, which Redis's enqueue script reads with cjson, which refuses the escape
    of a lone surrogate: a field holding one is InvalidInput naming it before Redis is touched, however the session
    is queued (enqueue, revive, backstop) and whatever the row holds (its title, server, directory)."""
    for name, value in fields.items():
        parse_text(value, f"the session's {name}")


def epoch_of(layer: Mapping[str, Any]) -> int:
    """The fencing epoch as the poller's fenced write reads it (`::bigint`): an integer, or one in decimal text.

    Anything else (a fraction, a boolean, a word) would fail every write the new owner makes, so it is refused.
    """
    value = layer.get("epoch")
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        epoch = value
    elif isinstance(value, str) and _is_decimal(value.strip()):
        epoch = int(value)
    else:
        raise InvalidInput(f"metadata.{LAYER_KEY}.epoch is {json_kind(value)}, not an integer")
    if not -(2**63) <= epoch < 2**63:
        raise InvalidInput(f"metadata.{LAYER_KEY}.epoch {epoch} is out of PostgreSQL's bigint range")
    return epoch


def _is_decimal(text: str) -> bool:
    """An optionally signed run of ASCII digits: what both int() and PostgreSQL's bigint read alike."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    return digits.isascii() and digits.isdigit()


@dataclass(frozen=True, slots=True)
class Carried:
    """What a dropped job held that its row may not (poller/rewound.py): the prompts still queued in it (a follow-up
    whose record in the row had not committed yet) and the one its owner was sending (`promptSending`), which the
    next owner must wait to see before it sends it again."""

    prompts: Sequence[str] = ()
    sending: str | None = None

    def prompts_after(self, recorded: list[str]) -> list[str]:
        """`recorded` (the row's), then those of ours it lacks, by messageID."""
        known = {json.loads(entry).get("messageID") for entry in recorded}
        return [*recorded, *(p for p in self.prompts if json.loads(p).get("messageID") not in known)]


def prompts_of(layer: Mapping[str, Any]) -> list[str]:
    """Every prompt the row records, as queued: each a `{messageID, text}` object of strings."""
    prompts = layer.get("prompts")
    if prompts is None:
        return []
    if not isinstance(prompts, list):
        raise InvalidInput(f"metadata.{LAYER_KEY}.prompts is {json_kind(prompts)}, not an array")
    entries = []
    for n, prompt in enumerate(prompts):
        fields = (prompt.get("messageID"), prompt.get("text")) if isinstance(prompt, dict) else (None, None)
        message_id, text = fields
        if not isinstance(message_id, str) or not isinstance(text, str):
            raise InvalidInput(f"metadata.{LAYER_KEY}.prompts[{n}] is not a {{messageID, text}} object of strings")
        entries.append(prompt_entry(message_id, text))
    return entries


def messages_of(messages: object) -> list[Any]:
    """The row's messages, to seed the live copy with: each needs the ids that copy is keyed by (a message's
    `info.id`; a part's `id` and `messageID`), as a list the poller would accept from OpenCode does."""
    if messages is None:
        return []
    if not isinstance(messages, list):
        raise InvalidInput(f"messages is {json_kind(messages)}, not an array")
    for n, message in enumerate(messages):
        info = message.get("info") if isinstance(message, dict) else None
        parts = message.get("parts") if isinstance(message, dict) else None
        if not isinstance(info, dict) or not isinstance(info.get("id"), str) or not isinstance(parts, list):
            raise InvalidInput(f"messages[{n}] is not an object with an info.id string and a parts array")
        parse_text(info["id"], f"messages[{n}].info.id")  # a key of the live copy (cjson reads the keys)
        for part in parts:
            if not is_part(part):  # what the poller takes from OpenCode (shared.opencode.shapes)
                raise InvalidInput(f"messages[{n}] has a part without id and messageID strings")
            parse_text(part_key(part), f"messages[{n}] part key")
    return messages
