"""Usage on hostile input (review), against real Redis and PostgreSQL: the archive write, the usage migration's
backfill, a ticket's usage and the CLI's totals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from shared import commands, usage_report
from shared.ids import SessionId, TicketId
from shared.models import dumps, loads
from shared.store import archive, keys
from shared.store.live import LiveState
from shared.usage import Usage
from tests.helpers import run_cli

pytestmark = pytest.mark.anyio

STATE = LiveState(session_id=SessionId("ses_" + "r" * 26), ticket_id=TicketId("T-R"), started_at=1_000)
COLUMNS = "tokens_input, tokens_output, tokens_reasoning, tokens_cache_read, tokens_cache_write, cost, steps"

# OpenCode's JSON text as the poller reads it (orjson, the standard library for what orjson refuses): NaN and
# Infinity are floats to Python, and no JSON to PostgreSQL.
NON_FINITE = (
    b'[{"info": {"id": "msg_1", "role": "assistant", "cost": NaN, "tokens": {"input": 5, "output": Infinity}},'
    b' "parts": [{"id": "prt_1", "messageID": "msg_1", "type": "x", "n": -Infinity, "big": 1e400}]},'
    b' {"info": {"id": "msg_2", "role": "assistant", "cost": 0.5, "tokens": {"input": 2, "reasoning": [NaN]}},'
    b' "parts": [{"id": "prt_2", "messageID": "msg_2", "type": "text", "text": "NaN Infinity"}]}]'
)


async def _columns(db: Any, sid: str) -> tuple[Any, ...]:
    cur = await db.execute(f"SELECT {COLUMNS} FROM opencode_sessions WHERE id = %s", (sid,))
    row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def test_an_archive_of_messages_holding_nan_or_infinity_is_written(db):
    """Was: the archive's JSON carried NaN and Infinity as the standard library writes them, which PostgreSQL's
    jsonb refuses: every write of the finished run failed, and after SESSION_MAX_FAILURES tries the session ended
    in error with its transcript unarchived. They are written null now, as the live copy (orjson) holds them."""
    messages = loads(NON_FINITE)
    assert await archive.upsert_fenced(db, STATE, 1, status="completed", messages=messages, now_ms=2_000)
    row = await archive.fetch(db, STATE.session_id)
    assert row is not None
    assert row.usage == Usage(input=7, cost=0.5, steps=2)
    assert row.messages == loads(dumps(messages))  # as Redis holds them: NaN and Infinity read back null
    assert row.messages[0]["info"]["cost"] is None and row.messages[0]["parts"][0]["big"] is None
    assert row.messages[1]["parts"][0]["text"] == "NaN Infinity"  # text that only spells them is left as it is


async def test_an_archive_of_sums_past_its_columns_is_written_with_the_columns_largest(db, monkeypatch):
    """Was: a session whose sums passed bigint (2^23 steps of 2^40 tokens fit OPENCODE_MAX_RESPONSE_BYTES) or
    whose steps passed integer made PostgreSQL refuse every write of its archive ("bigint out of range")."""
    huge = Usage(input=2**70, output=2**63, reasoning=2**63 - 1, cache_read=5, cost=1e15, steps=2**31)
    monkeypatch.setattr(Usage, "of_messages", classmethod(lambda cls, messages: huge))
    message = {"info": {"id": "msg_1", "role": "assistant"}, "parts": []}
    assert await archive.upsert_fenced(db, STATE, 1, status="completed", messages=[message], now_ms=2_000)
    top = 2**63 - 1
    assert await _columns(db, STATE.session_id) == (top, top, top, 5, 0, Decimal("1E+15"), 2**31 - 1)


def _assistant(cost: str, *tokens: str) -> str:
    names = ("input", "output", "reasoning")
    fields = ", ".join(f'"{name}": {value}' for name, value in zip(names, tokens, strict=False))
    cache = f', "cache": {{"read": {tokens[3]}, "write": {tokens[4]}}}' if len(tokens) > 4 else ""
    return f'{{"info": {{"id": "m", "role": "assistant", "cost": {cost}, "tokens": {{{fields}{cache}}}}}, "parts": []}}'


# Old rows' messages, each count or cost one a JSON writer may send: the migration must count them as the archive
# write does (shared/usage.py), and never fail.
OLD_ROWS = {
    "bounds": [
        _assistant("999999999999.5", "1099511627775", "1099511627775.9", "1.9", "0", "-0"),
        _assistant("1e12", "1099511627776", "-5", "-0.5", "1e-400", "9223372036854775807"),
        _assistant("0.25", "9223372036854775808", "1e19", "18446744073709551616", "1e308", "2"),
    ],
    "past numeric": [
        _assistant("9e131071", "9e131071", "9e131071", "9e131071", "9e131071", "9e131071"),
        _assistant("9e131071", "9e131071", "9e131071", "9e131071", "9e131071", "9e131071"),
        _assistant("-9e131071", "-9e131071", "1", "2", "3", "4"),
    ],
    "no numbers": [
        _assistant('"12"', "true", "null", '{"a": 1}', "[1]", '"1e3"'),
        _assistant("false", "[]", "{}", '""', "null", "false"),
        '{"info": {"id": "m", "role": "assistant", "cost": 1, "tokens": [1, 2]}, "parts": []}',
        '{"info": {"id": "m", "role": "assistant", "cost": 1, "tokens": {"input": 3, "cache": 7}}, "parts": []}',
        '[{"info": {"role": "assistant", "cost": 1}}]',
        "5",
        '{"info": "assistant"}',
        '{"info": {"role": "user", "cost": 3, "tokens": {"input": 3}}}',
    ],
}


async def test_a_tickets_usage_and_the_cli_show_a_sum_past_one_messages_bounds(db, redis, opencode, schema, redis_url):
    """Was: a running session whose steps cost 1.2e12 together showed cost 0 in its ticket's usage (its live
    state read back under one step's bound), and `usage` printed a total's cost past 1e12 and tokens past 2^62
    as 0 while `usage --json` showed them."""
    running = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-BIG")
    live = Usage(input=3, cost=1.2e12, steps=2)
    await redis.hset(keys.session(running["sessionId"]), "usage", dumps(live.to_json()))
    ended = Usage(input=2**62, output=1, cost=6e11, steps=1)
    for n in range(2):
        sid = f"ses_{'b' * 25}{n}"
        await db.execute(
            f"INSERT INTO opencode_sessions (id, ticket_id, session_type, status, {COLUMNS})"
            " VALUES (%s, 'T-BIG', 'ask', 'completed', %s, %s, 0, 0, 0, %s, %s)",
            (sid, ended.input, ended.output, ended.cost, ended.steps),
        )
    answer = await usage_report.ticket_usage(redis, db, "T-BIG")
    live_row = next(s for s in answer["sessions"] if s["sessionId"] == running["sessionId"])
    assert live_row["usage"] == live.to_json()
    total = Usage.total([live, ended, ended])
    assert answer["total"] == total.to_json() and total.input == 2**63 + 3

    result = await run_cli(["usage", "--ticket", "T-BIG"], {"DATABASE_URL": schema, "REDIS_URL": redis_url})
    assert result.returncode == 0, result.stderr
    lines = {line[:19].strip(): line[19:] for line in result.stdout.splitlines()}
    assert lines["input tokens"] == f"{2**63 + 3:,}" and lines["cost"] == "2400000000000.0000"
