"""How an answer's outcome is settled when the session ends or changes hands around it: `gone` only when no attempt
may have given it, never for one still on its way or one an earlier owner may have given."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import psycopg_pool
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from poller.answers import ANSWER_PREFIX, AnswerDelivery
from poller.archive import Archive
from poller.pending import PendingRequests
from poller.request_board import RequestBoard
from shared.dev.simulator.server import serve_in_thread
from shared.opencode.client import OpenCodeClient
from shared.store import requests
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

SID = "ses_" + "o" * 26
QUESTION = {"id": "que_outcome0001", "sessionID": SID, "questions": [{"question": "?", "options": []}], "tool": None}


class ScriptedAsks:
    """`GET /question` lists QUESTION while `listed`; a reply answers `reply` (404, or True once `release` is set)."""

    def __init__(self) -> None:
        self.listed = True
        self.reply: int | None = None  # 404, or None: wait for `release`, then true
        self.release = threading.Event()
        self.replies = 0

    def app(self) -> Starlette:
        async def questions(request: Request) -> JSONResponse:
            return JSONResponse([QUESTION] if self.listed else [])

        async def reply(request: Request) -> JSONResponse:
            self.replies += 1
            if self.reply == 404:
                return JSONResponse({"name": "NotFoundError", "data": {"message": "not found"}}, status_code=404)
            await anyio.to_thread.run_sync(self.release.wait)
            return JSONResponse(True)

        routes = [Route("/question", questions), Route("/permission", lambda r: JSONResponse([]))]
        return Starlette(routes=[*routes, Route("/question/{rid}/reply", reply, methods=["POST"])])


@pytest.fixture
def asks() -> Iterator[tuple[str, ScriptedAsks]]:
    scripted = ScriptedAsks()
    try:
        with serve_in_thread(scripted.app()) as url:
            yield url, scripted
    finally:
        scripted.release.set()


async def recorded(db: Any) -> None:
    await db.execute("DELETE FROM opencode_session_requests WHERE id = %s", (QUESTION["id"],))
    entry = {"kind": "question", "id": QUESTION["id"], "askedAt": 1, "questions": QUESTION["questions"]}
    await requests.record_answer(db, SID, entry, {"answers": [["A"]]}, "alice", 2)


def answer_job() -> dict[str, str]:
    return {f"{ANSWER_PREFIX}{QUESTION['id']}": json.dumps({"answers": [["A"]]})}


async def outcome(db: Any) -> str | None:
    row = await requests.fetch(db, QUESTION["id"])
    return row.outcome if row is not None else None


async def test_an_answer_on_its_way_as_the_session_ends_is_not_recorded_gone(asks, db, schema):
    """Was: `gone` (first write wins), and OpenCode then took it: the archive said it was not taken."""
    url, scripted = asks
    await recorded(db)
    async with OpenCodeClient(url) as oc, psycopg_pool.AsyncConnectionPool(schema, open=False) as pool:
        board, archive = RequestBoard(oc), Archive(pool)
        delivery = AnswerDelivery(oc, SID, lambda: True, retry_deadline_s=60)
        delivery.load({})  # the session's first read: nothing inherited
        delivery.load(answer_job())
        await board.refresh()
        async with anyio.create_task_group() as tg:
            await delivery.step(tg, board, PendingRequests(SID, []), archive)
            await wait_for(lambda: anyio.to_thread.run_sync(lambda: scripted.replies == 1), what="the reply sent")
            await delivery.record_untaken(archive)  # the session ends (a cancel) while the reply is on its way
            assert await outcome(db) is None
            scripted.release.set()
        await delivery.record_taken(archive)
    assert await outcome(db) == "answered"


async def test_an_answer_an_earlier_owner_may_have_given_is_not_recorded_gone(asks, db, schema):
    """Taken over mid-send: this replica's list predates the earlier owner's reply landing, its own attempt gets a
    404 (already answered), then the request is gone from the list. Was: `gone`."""
    url, scripted = asks
    await recorded(db)
    scripted.reply = 404
    async with OpenCodeClient(url) as oc, psycopg_pool.AsyncConnectionPool(schema, open=False) as pool:
        board, archive = RequestBoard(oc), Archive(pool)
        delivery = AnswerDelivery(oc, SID, lambda: True, retry_deadline_s=60)
        delivery.load(answer_job())  # the first read holds it: recorded before this replica took the session
        await board.refresh()
        async with anyio.create_task_group() as tg:
            await delivery.step(tg, board, PendingRequests(SID, []), archive)
        assert scripted.replies == 1
        scripted.listed = False
        await board.refresh()
        async with anyio.create_task_group() as tg:
            await delivery.step(tg, board, PendingRequests(SID, []), archive)
    assert await outcome(db) == "answered"
