"""The lists as a hostile client and a busy archive see them: page walks that neither skip nor repeat, every live
session listed, odd and repeated parameters a 400 naming them."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg_pool
import pytest

from gateway.session_pages import page_response
from gateway.state import GatewayState
from shared import commands
from shared.sessions import archived_sessions
from shared.store import keys
from shared.store.live import LiveState
from tests.helpers import wait_for, waiting_entry

pytestmark = pytest.mark.anyio
START = datetime(2026, 1, 1, 12, 0, 0, 123_000)


def sid(i: int) -> str:
    return f"ses_{i:026d}"


async def archive_row(db: Any, i: int, started: datetime, *, ticket: str = "T-W", status: str = "completed") -> None:
    """A row as another backend writes it (README: job wire format), started_at to the microsecond (`now()`)."""
    messages = json.dumps([{"info": {"id": f"msg_{i:026d}", "role": "user"}, "parts": [{"text": "x" * 2000}]}])
    await db.execute(
        "INSERT INTO opencode_sessions (id, ticket_id, session_type, status, messages, metadata, started_at,"
        " completed_at) VALUES (%s, %s, 'chat', %s, %s::jsonb, '{}', %s, %s)",
        (sid(i), ticket, status, messages, started, started),
    )


async def walk(client: httpx.AsyncClient, path: str, **params: str) -> list[str]:
    """Every session id of the list, page after page, following nextCursor."""
    seen: list[str] = []
    cursor = None
    for _ in range(200):
        response = await client.get(path, params={**params, **({"before": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [s["sessionId"] for s in page["sessions"]]
        if (cursor := page["nextCursor"]) is None:
            return seen
    raise AssertionError(f"the walk did not end: {seen}")


async def test_a_walk_of_the_pages_lists_every_session_once_when_starts_share_a_millisecond(make_gateway, db):
    """Was: the cursor kept the millisecond only, so the next page skipped every row of that millisecond that came
    after the page's last (ten rows of one millisecond, written with `now()`, listed as one per walk)."""
    micros = [456, 200, 999, 1, 456, 456, 0, 750, 200, 333, 0, 999]  # equal starts too, across page boundaries
    for i, us in enumerate(micros):
        await archive_row(db, i, START + timedelta(microseconds=us))
    await archive_row(db, 50, START + timedelta(milliseconds=1))  # the next millisecond, and the one before
    await archive_row(db, 51, START - timedelta(microseconds=1))
    expected = [s for _, s in sorted(((START + timedelta(microseconds=us), sid(i)) for i, us in enumerate(micros)))]
    expected = [sid(50), *reversed(expected), sid(51)]
    gateway = await make_gateway(gateway_max_response_bytes=5000)  # two sessions' messages a page at most
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        for limit in ("1", "2", "3", "5", "100"):
            assert await walk(client, "/tickets/T-W/sessions", limit=limit) == expected, limit
            assert await walk(client, "/sessions", type="chat", limit=limit) == expected, limit
            with_messages = await walk(client, "/tickets/T-W/sessions", limit=limit, messages="true")
            assert with_messages == expected, limit


async def test_a_cursor_of_a_millisecond_start_is_as_before(make_gateway, db):
    """Cursors of rows without sub-millisecond starts (all our own) keep their form: those handed out stay valid."""
    await archive_row(db, 1, START)
    await archive_row(db, 2, START)
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway) as client:
        page = (await client.get("/tickets/T-W/sessions", params={"limit": "1"})).json()
    assert base64.urlsafe_b64decode(page["nextCursor"] + "==").decode() == f"{1767268800123}:{sid(2)}"


async def test_the_live_list_holds_every_live_session_and_filters_them_all(make_gateway, redis, db):
    """Was: the newest 500 only, with `nextCursor` null, and `type`/`server` applied after that cut: five live admin
    sessions behind 600 newer chats were not listed at all."""
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(605):
            state = LiveState(session_id=sid(i), session_type="admin" if i < 5 else "chat", started_at=1000 + i)
            pipe.hset(keys.session(state.session_id), mapping=state.encode() | {"seq": "1", "updatedAt": "1"})
            pipe.zadd(keys.LIVE_INDEX, {state.session_id: 1000 + i})
        await pipe.execute()
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        every = (await client.get("/sessions", params={"live": "true"})).json()
        admin = (await client.get("/sessions", params={"live": "true", "type": "admin"})).json()
    assert [s["sessionId"] for s in every["sessions"]] == [sid(i) for i in reversed(range(605))]
    assert [s["sessionId"] for s in admin["sessions"]] == [sid(i) for i in reversed(range(5))]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=abc&limit=5", "limit"),  # was a 200: only the last one was read
        ("limit=5&limit=6", "limit"),
        (f"before=x&before={base64.urlsafe_b64encode(f'1:{sid(1)}'.encode()).decode().rstrip('=')}", "before"),
        ("messages=maybe&messages=true", "messages"),
        ("server=a&server=b", "server"),
        ("directory=/a&directory=/b", "directory"),
        ("directory=/%ed%a0%80", "directory"),  # a lone surrogate in UTF-8's form: was read as U+FFFD, a 200
        ("directory=/%ff", "directory"),
    ],
)
async def test_a_repeated_or_non_utf8_parameter_is_a_400_naming_it(make_gateway, db, query, parameter):
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway) as client:
        for path in ("/sessions", "/sessions?live=true", "/tickets/T-1/sessions"):
            response = await client.get(f"{path}{'&' if '?' in path else '?'}{query}")
            assert response.status_code == 400, (path, query, response.text)
            assert response.json()["detail"] == {"parameter": parameter}
        admin_only = await client.get(f"/sessions?ticket=T-1&ticket=T-2&{query}")
        assert admin_only.status_code == 400
        listed = await client.get("/sessions", params={"directory": "/\ufffd"})  # a U+FFFD the client meant
    assert listed.status_code == 200 and listed.json()["sessions"] == []


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/sessions/not-valid", "session_id"),
        ("/sessions/not-valid/stream", "session_id"),
        ("/sessions/ses_%00aaaaaaaaaaaaaaaaaaaaaaaa", "session_id"),
        ("/tickets/bad:id/active", "ticket_id"),
        ("/tickets/bad:id/sessions", "ticket_id"),
        ("/tickets/%ed%a0%80/usage", "ticket_id"),
        ("/sessions?ticket=bad:id", "ticket"),
        ("/sessions?ticket=", "ticket"),
        ("/sessions?ticket=T-1&ticket=T-2", "ticket"),
    ],
)
async def test_an_id_of_another_shape_is_a_400_naming_its_parameter(make_gateway, db, path, parameter):
    """README: a malformed query or path parameter is a 400 whose detail.parameter names it (was: `detail: null`)."""
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway) as client:
        response = await client.get(path)
    assert response.status_code == 400 and response.json()["detail"] == {"parameter": parameter}, response.text


async def test_a_session_revived_after_its_page_was_read_is_not_sent_as_archived(redis, db, schema):
    """A follow-up makes an archived session live between the page's read and its messages' read. Was: sent in the
    archived list all the same, `status: pending`, `live: false`."""
    for i in range(3):
        await archive_row(db, i, START + timedelta(milliseconds=i))
    page = await archived_sessions(db, ticket_id="T-W", limit=2)
    assert [s["sessionId"] for s in page["sessions"]] == [sid(2), sid(1)]
    await db.execute("UPDATE opencode_sessions SET status = 'pending' WHERE id = %s", (sid(2),))  # archive.reopen
    async with psycopg_pool.AsyncConnectionPool(schema, min_size=1, max_size=2, open=False) as pool:
        state = GatewayState(redis=redis, pool=pool, fanout=None, auth=None, metrics=None, slots=None)  # type: ignore[arg-type]
        response = await page_response(state, page, include_messages=True)
        body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
    sent = json.loads(body)
    assert [s["sessionId"] for s in sent["sessions"]] == [sid(1)]
    assert sent["nextCursor"] == page["nextCursor"]


async def test_a_tickets_active_session_is_found_after_a_newer_one_ended(
    make_worker, make_gateway, redis, db, opencode
):
    """Two sessions of one ticket run at once; the newer one ends, and its end clears the ticket's pointer. Was: a
    404 from `/tickets/{id}/active` while the older one still ran (here: waiting for a permission reply)."""
    await make_worker()
    older = await commands.enqueue(
        redis, db, opencode, session_type="chat", ticket_id="T-ACT", prompt="TOOL run it", permission=["bash=ask"]
    )
    await waiting_entry(redis, older["sessionId"])
    newer = await commands.enqueue(redis, db, opencode, session_type="ask", ticket_id="T-ACT", prompt="ECHO hi")

    async def newer_archived() -> bool:
        cur = await db.execute("SELECT status FROM opencode_sessions WHERE id = %s", (newer["sessionId"],))
        row = await cur.fetchone()
        return row is not None and row[0] == "completed" and not await redis.exists(keys.ticket_active("T-ACT"))

    await wait_for(newer_archived, timeout=30, what="the newer session archived, the pointer gone")
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway) as client:
        active = await client.get("/tickets/T-ACT/active")
        other = await client.get("/tickets/T-NONE/active")
    assert active.status_code == 200, active.text
    assert active.json()["sessionId"] == older["sessionId"] and active.json()["status"] == "waiting"
    assert other.status_code == 404
