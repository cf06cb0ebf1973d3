"""shared.store.unstorable: the archive's reversible form of characters PostgreSQL refuses."""

from __future__ import annotations

import json

import pytest

from shared import commands
from shared.ids import SessionId
from shared.store import archive, requests
from shared.store.unstorable import ESCAPE, dumps_jsonb, escape_text, loads_jsonb, restore_text

AWKWARD = [
    "a\x00b",
    "\x00",
    "lone \ud800 surrogate",
    f"the escape itself {ESCAPE} and {ESCAPE}0000 typed in",
    "\\u0000 typed as six characters",
    "emoji 🎉 stays",
    f"{ESCAPE}ffff",
    "",
]


@pytest.mark.parametrize("text", AWKWARD)
def test_every_string_round_trips(text):
    assert restore_text(escape_text(text)) == text
    assert "\x00" not in escape_text(text)


def test_text_with_nothing_to_escape_is_stored_as_is():
    value = {"text": "plain ✓ 🎉 \\u0000", "n": [1, 2.5, None, True]}
    assert json.loads(dumps_jsonb(value)) == value


def test_json_values_round_trip_keys_included():
    value = {"a\x00": ["x\x00y", {"k": f"{ESCAPE}\ud83d"}], "n": 1}
    text = dumps_jsonb(value)
    assert "\\u0000" not in text
    assert loads_jsonb(text) == value
    assert loads_jsonb(text.encode()) == value


def test_the_documented_form():
    assert escape_text("a\x00b") == f"a{ESCAPE}0000b"
    assert escape_text(ESCAPE) == f"{ESCAPE}ffff"


def test_a_float_that_is_no_json_number_is_written_null_for_every_jsonb_column():
    """The standard library reads OpenCode's NaN, Infinity and 1e400 as floats and would write them back: jsonb
    refuses that text. Was: the archive's messages, and a permission request's entry, failed every write."""
    value = json.loads('{"cost": NaN, "tokens": [Infinity, -Infinity, 1e400, 1.5], "text": "NaN \\u0000"}')
    text = dumps_jsonb(value)
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} written")) == {
        "cost": None,
        "tokens": [None, None, None, 1.5],
        "text": f"NaN {ESCAPE}0000",
    }
    assert loads_jsonb(text)["text"] == "NaN \x00"


@pytest.mark.anyio
async def test_a_request_entry_holding_nan_is_recorded(db):
    entry = json.loads('{"id": "per_nan", "kind": "permission", "askedAt": 1, "metadata": {"n": NaN}}')
    await requests.record_asked(db, SessionId("ses_" + "n" * 26), entry)
    assert (await requests.fetch(db, "per_nan")) is not None


@pytest.mark.anyio
async def test_metadata_integers_past_64_bits_are_read_back_exactly(redis, db, opencode):
    """Metadata may hold an integer of up to 1,000 digits (enqueue takes it exactly). Was (briefly): the archive's
    reader, orjson, read one past 64 bits as a float, and `show`, history and the gateway answered it rounded."""
    metadata = {"orderId": 2**70 + 1, "digits": "12345678901234567890123", "small": 5}
    state = await commands.enqueue(redis, db, opencode, session_type="chat", prompt="ECHO x", metadata=metadata)
    row = await archive.fetch(db, SessionId(state["sessionId"]))
    assert row is not None and row.user_metadata == metadata
