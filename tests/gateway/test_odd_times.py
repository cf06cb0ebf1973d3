"""Rows whose times PostgreSQL holds and Python cannot (`infinity`, past year 9999, BC) or that start before 1970,
as another backend may write them: every read and list that holds one answers, and a walk of the pages reaches
every row once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shared.sessions import MAX_CURSOR_MS, MIN_CURSOR_MS

pytestmark = pytest.mark.anyio

# started_at as PostgreSQL's text, newest first as the lists order them
STARTS = ["infinity", "20000-01-01 00:00:00", "2026-01-01 12:00:00.5", "1960-06-01 00:00:00", "0044-03-15 00:00:00 BC"]
STARTS.append("-infinity")


def sid(i: int) -> str:
    return f"ses_odd{i:023d}"


async def odd_rows(db: Any) -> None:
    for i, started in enumerate(STARTS):
        await db.execute(
            "INSERT INTO opencode_sessions (id, ticket_id, session_type, status, messages, metadata, started_at,"
            " completed_at) VALUES (%s, 'T-ODD', 'chat', 'completed', '[]', '{}', %s::timestamp, %s::timestamp)",
            (sid(i), started, started),
        )


async def test_rows_of_times_python_cannot_hold_are_listed_read_and_walked(make_gateway, db):
    """Was: a 500 for every list and read holding one (psycopg: "timestamp too large (after year 10K)"), and a walk
    past a row started before 1970 got a cursor the next page refused."""
    await odd_rows(db)
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway) as client:
        for limit in ("1", "2", "100"):
            seen, cursor = [], None
            while True:
                params = {"limit": limit, **({"before": cursor} if cursor else {})}
                response = await client.get("/tickets/T-ODD/sessions", params=params)
                assert response.status_code == 200, response.text
                page = response.json()
                seen += [s["sessionId"] for s in page["sessions"]]
                if (cursor := page["nextCursor"]) is None:
                    break
            # each once, newest first; a walk may pass over another row of a time Python cannot hold (the cursor
            # after one is the nearest time Python holds), never one it can
            assert seen == sorted(set(seen), key=lambda s: int(s[7:])), limit
            assert {sid(2), sid(3)} <= set(seen) and len(seen) >= 4, limit
        starts = [s["startedAt"] for s in page["sessions"]] if limit == "100" else []
        assert starts[0] == starts[1] == MAX_CURSOR_MS  # infinity and year 20000: the last instant Python holds
        assert starts[-1] == starts[-2] == MIN_CURSOR_MS  # -infinity and BC: the first
        assert starts[3] < 0  # 1960
        one = await client.get(f"/sessions/{sid(0)}")
        assert one.status_code == 200 and one.json()["completedAt"] == MAX_CURSOR_MS, one.text
        usage = await client.get("/tickets/T-ODD/usage")
        assert usage.status_code == 200 and len(usage.json()["sessions"]) == len(STARTS), usage.text
        admin = await client.get("/sessions", params={"type": "chat", "limit": "100"})
        assert admin.status_code == 200 and len(admin.json()["sessions"]) == len(STARTS), admin.text
