"""enqueue's arguments as the Python API takes them (any object): one of another type, or holding what no store
takes, is InvalidInput naming the argument before OpenCode, PostgreSQL or Redis is written; a row holding such a
thing is InvalidInput naming the field, which the backstop logs and passes over.

Was: half an emoji in the title went to OpenCode and PostgreSQL, then Redis's enqueue script refused it (the row
stayed `pending` forever, failing the backstop every pass); other types failed with TypeError or AttributeError.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import AsyncIterator
from typing import Any

import psycopg_pool
import pytest
import structlog
from psycopg.types.json import Jsonb

from poller import reconcile
from shared import commands
from shared.config import ServerConfig
from shared.errors import InvalidInput
from shared.ids import SessionId
from shared.opencode.servers import OpenCodeServers
from shared.store import archive, keys
from shared.store.archive import LAYER_KEY
from shared.store.unstorable import dumps_jsonb
from tests.shared.test_commands import opencode_sessions, redis_keys, row_count

pytestmark = pytest.mark.anyio

CUT = "report \ud83d"  # an emoji cut in half: a lone UTF-16 surrogate
ROW = SessionId("ses_555555555555FFFFFFFFFFFFFF")


async def assert_nothing_written(redis: Any, db: Any, simulator_url: str) -> None:
    assert await opencode_sessions(simulator_url) == []
    assert await row_count(db) == 0
    assert await redis_keys(redis) == set()


BAD_ENQUEUES: dict[str, dict[str, Any]] = {
    "title cut mid-emoji": {"title": CUT},
    "agent not a string": {"agent": 5},
    "model not a string": {"model": 5},
    "permission a lone rule": {"permission": "bash=allow"},
    "permission rule not a string": {"permission": [5]},
    "metadata bytes": {"metadata": {"a": b"x"}},
    "metadata datetime": {"metadata": {"a": datetime.datetime(2024, 1, 1)}},
    "metadata set": {"metadata": {"a": {1}}},
    "metadata object": {"metadata": {"a": [object()]}},
    "metadata tuple key": {"metadata": {(1, 2): "a"}},
    "metadata integer key": {"metadata": {"a": {1: "a"}}},
    "metadata tuple": {"metadata": {"a": (1, 2)}},
}


@pytest.mark.parametrize("bad", BAD_ENQUEUES.values(), ids=BAD_ENQUEUES.keys())
async def test_a_bad_argument_is_invalid_input_before_anything_is_written(redis, db, opencode, simulator_url, bad):
    with pytest.raises(InvalidInput):
        await commands.enqueue(redis, db, opencode, session_type="ask", ticket_id="T-1", prompt="ECHO hi", **bad)
    await assert_nothing_written(redis, db, simulator_url)


@pytest.fixture
async def servers(simulator_url: str) -> AsyncIterator[OpenCodeServers]:
    servers = OpenCodeServers((ServerConfig("default", simulator_url),))
    yield servers
    await servers.aclose()


BAD_PLACES: dict[str, dict[str, Any]] = {
    "server a list": {"server": ["default"]},
    "server empty": {"server": ""},
    "directory a number": {"directory": 5},
    "directory bytes": {"directory": b"/tmp"},
    "directory cut mid-emoji": {"directory": "/tmp/\ud800"},
    "directory longer than a path": {"directory": "/" + "a" * 100_000},
}


@pytest.mark.parametrize("bad", BAD_PLACES.values(), ids=BAD_PLACES.keys())
async def test_a_bad_server_or_directory_is_invalid_input_naming_it(redis, db, servers, simulator_url, bad):
    with pytest.raises(InvalidInput, match=r"server|directory"):
        await commands.enqueue(redis, db, servers, session_type="ask", prompt="ECHO hi", **bad)
    await assert_nothing_written(redis, db, simulator_url)


async def test_a_title_keeps_whole_characters_and_refuses_half_of_one(redis, db, opencode, simulator_url):
    with pytest.raises(InvalidInput, match="title holds a lone UTF-16 surrogate"):
        await commands.enqueue(redis, db, opencode, session_type="ask", title=CUT)
    await assert_nothing_written(redis, db, simulator_url)
    whole = "report \U0001f600"  # the whole emoji: a surrogate pair in the scripts' JSON, which they read
    sid = SessionId((await commands.enqueue(redis, db, opencode, session_type="ask", title=whole))["sessionId"])
    assert (await redis.hget(keys.job(sid), "title")).decode() == whole
    assert (await archive.fetch(db, sid)).layer["title"] == whole  # type: ignore[union-attr]


async def insert_row(db: Any, *, layer: dict[str, Any], messages: Any = ()) -> archive.ArchiveRow:
    """A pending row as the archive writes it: what PostgreSQL refuses escaped, restored when read."""
    await db.execute(
        "INSERT INTO opencode_sessions (id, session_type, status, messages, metadata) VALUES (%s, 'ask', 'pending',"
        " %s, %s)",
        (ROW, Jsonb(list(messages), dumps=dumps_jsonb), Jsonb({LAYER_KEY: layer}, dumps=dumps_jsonb)),
    )
    row = await archive.fetch(db, ROW)
    assert row is not None
    return row


LAYER = {"title": "fine", "prompts": [], "epoch": 0}
ROWS: dict[str, dict[str, Any]] = {
    "title cut mid-emoji": {"layer": {**LAYER, "title": CUT}},
    "message id cut": {"layer": LAYER, "messages": [{"info": {"id": "msg_\ud800"}, "parts": []}]},
    "part id cut": {
        "layer": LAYER,
        "messages": [{"info": {"id": "msg_a"}, "parts": [{"id": "prt_\udfff", "messageID": "msg_a"}]}],
    },
}


@pytest.mark.parametrize("fields", ROWS.values(), ids=ROWS.keys())
async def test_a_row_holding_half_a_character_is_invalid_input_naming_the_field(redis, db, fields):
    """The backstop logs such a row and passes over it, and send and cancel refuse it, with Redis untouched."""
    row = await insert_row(db, **fields)
    with pytest.raises(InvalidInput, match="lone UTF-16 surrogate") as caught:
        await commands.requeue_from_archive(redis, row)
    assert "title" in caught.value.message or "messages[0]" in caught.value.message
    with pytest.raises(InvalidInput, match="lone UTF-16 surrogate"):
        await commands.send(redis, db, ROW, "ECHO again")
    with pytest.raises(InvalidInput, match="lone UTF-16 surrogate"):
        await commands.cancel(redis, db, ROW)
    assert await redis_keys(redis) == set()


async def test_the_backstop_passes_over_such_a_row_with_one_line_naming_the_field(redis, db, schema):
    """Was: the script's error, with its traceback, every pass."""
    await insert_row(db, layer={**LAYER, "title": CUT})
    async with psycopg_pool.AsyncConnectionPool(schema, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        with structlog.testing.capture_logs() as logs:
            assert await reconcile.reconcile_once(redis, pool) == 0
    [skipped] = [entry for entry in logs if entry["event"] == reconcile.NOT_REQUEUED]
    assert skipped["session_id"] == ROW and skipped["exc_info"] is False
    assert skipped["reason"].startswith(f"metadata.{LAYER_KEY}.title holds a lone UTF-16 surrogate")
    assert await redis_keys(redis) == set()


@pytest.mark.parametrize("field", ["server", "directory"])
async def test_a_row_whose_place_holds_half_a_character_is_invalid_input(redis, db, field):
    """PostgreSQL's text cannot hold one, but a row is any object the backstop is handed: Redis is never asked."""
    row = dataclasses.replace(await insert_row(db, layer=LAYER), **{field: "/srv/\ud800"})
    with pytest.raises(InvalidInput, match=f"the session's {field} holds a lone UTF-16 surrogate"):
        await commands.requeue_from_archive(redis, row)
    assert await redis_keys(redis) == set()
