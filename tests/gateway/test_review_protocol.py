"""HTTP as hostile clients speak it, with auth on: HEAD of a stream, a header or parameter given twice, an `exp`
no clock reaches, and what may keep an answer (caches)."""

from __future__ import annotations

import json

import httpx
import jwt
import pytest

from shared import commands
from shared.config import Secret
from shared.store import keys
from shared.tokens import Scope, mint_token

pytestmark = pytest.mark.anyio
SECRET = "review-protocol-secret-of-enough-length-01"


def token(scope: Scope) -> str:
    return mint_token(SECRET, scope, 60)


def bearer(scope: Scope) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(scope)}"}


async def test_head_of_a_stream_answers_its_headers_and_frees_the_connection(make_gateway, redis, db, opencode):
    """Was: HEAD ran the stream itself, which never ends: the kept-alive connection hung (the next request on it
    never got an answer) and the stream held one of its token's slots and a subscription."""
    gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET), gateway_max_streams_per_token=1)
    state = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-HEAD", prompt="ECHO h")
    admin = bearer(Scope("admin"))
    limits = httpx.Limits(max_connections=1)  # every request on the one kept-alive connection
    async with httpx.AsyncClient(base_url=gateway, timeout=10, limits=limits) as client:
        for path in (f"/sessions/{state['sessionId']}/stream", "/sessions/live/stream"):
            head = await client.head(path, headers=admin)
            assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")
            assert (await client.get("/sessions?live=true", headers=admin)).status_code == 200
        async with client.stream("GET", "/sessions/live/stream", headers=admin) as response:
            assert response.status_code == 200  # the token's one slot is free
        other = bearer(Scope("ticket", "T-ELSE"))
        assert (await client.head(f"/sessions/{state['sessionId']}/stream", headers=other)).status_code == 403
        assert (await client.head("/sessions/live/stream")).status_code == 401


async def test_a_token_or_last_event_id_given_twice_is_a_400_naming_it(make_gateway, redis, db, opencode):
    """Was: read in silence, the first `Authorization` header and the last `?token=` (a proxy may pick another),
    and a second `?lastEventId=` was ignored, against the README's rule for parameters given twice."""
    gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    state = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-TWICE", prompt="ECHO t")
    sid, admin, ticket = state["sessionId"], token(Scope("admin")), token(Scope("ticket", "T-TWICE"))
    cases = [
        (f"/sessions/{sid}?token={ticket}&token={admin}", [], {"parameter": "token"}),
        (f"/sessions/{sid}", [("Authorization", f"Bearer {ticket}")] * 2, {"header": "authorization"}),
        (f"/sessions/{sid}/stream?token={ticket}&lastEventId=1&lastEventId=2", [], {"parameter": "lastEventId"}),
        (f"/sessions/{sid}/stream?token={ticket}", [("Last-Event-ID", "1")] * 2, {"header": "last-event-id"}),
    ]
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        for path, headers, detail in cases:
            response = await client.get(path, headers=headers)
            assert response.status_code == 400, (path, response.text)
            assert response.json()["detail"] == detail
        # one of each still works, and a Bearer header still wins over `?token=`
        response = await client.get(f"/sessions?live=true&token={admin}", headers={"Authorization": f"Bearer {ticket}"})
        assert response.status_code == 403


async def test_a_signed_exp_past_the_year_9999_is_a_401_not_a_broken_stream(make_gateway):
    """Was: accepted; the stream it opened crashed at its first wait (int too large to convert to float), a
    traceback in the log and a torn response for the client."""
    gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        for exp in (10**309, 253_402_300_800):
            forged = jwt.encode({"sub": "admin", "exp": exp}, SECRET, algorithm="HS256")
            response = await client.get("/sessions/live/stream", headers={"Authorization": f"Bearer {forged}"})
            assert response.status_code == 401 and "exp" in response.json()["error"]
        latest = jwt.encode({"sub": "admin", "exp": 253_402_300_799}, SECRET, algorithm="HS256")
        assert (await client.get("/metrics", headers={"Authorization": f"Bearer {latest}"})).status_code == 200


async def test_no_cache_keeps_an_answer_read_with_a_token(make_gateway, redis, db, opencode):
    """Was: no `Cache-Control` on the JSON answers (sessions, lists, usage, metrics, errors) nor `nosniff`: a
    browser or shared cache could keep one token's session and serve it after a logout or to the next user."""
    gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    state = await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id="T-NS", prompt="ECHO n")
    sid, ticket, admin = state["sessionId"], bearer(Scope("ticket", "T-NS")), bearer(Scope("admin"))
    reads = [
        (f"/sessions/{sid}", ticket, 200),
        ("/tickets/T-NS/active", ticket, 200),
        ("/tickets/T-NS/sessions?messages=true", ticket, 200),
        ("/tickets/T-NS/usage", ticket, 200),
        ("/sessions?live=true", admin, 200),
        ("/sessions?type=chat", admin, 200),
        ("/metrics", admin, 200),
        (f"/sessions/{sid}", {}, 401),
        ("/tickets/T-OTHER/usage", ticket, 403),
        ("/sessions/not-an-id", ticket, 400),
        ("/no/such/path", ticket, 404),
    ]
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        for path, headers, status in reads:
            response = await client.get(path, headers=headers)
            assert response.status_code == status, (path, response.text)
            assert response.headers["cache-control"] == "no-store", path
            assert response.headers["x-content-type-options"] == "nosniff", path
        async with client.stream("GET", f"/sessions/{sid}/stream", headers=ticket) as stream:
            assert stream.headers["cache-control"] == "no-store, no-transform"
        page = await client.get(f"/ui/sessions/{sid}")  # the pages hold no data: revalidated, as before
        assert page.headers["cache-control"] == "no-cache"


async def test_a_refused_range_of_a_static_file_is_a_json_error(make_gateway):
    """Was Starlette's text/plain 400 ("Range header: start must be less than end") and an empty text/plain 416."""
    gateway = await make_gateway(gateway_auth=True, gateway_auth_secret=Secret(SECRET))
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        size = len((await client.get("/static/ui.css")).content)
        for value, status in (("bytes=abc", 400), ("bytes=5-1", 400), ("items=0-1", 400), (f"bytes={size}-", 416)):
            response = await client.get("/static/ui.css", headers={"Range": value})
            assert response.status_code == status, value
            assert response.headers["content-type"] == "application/json", value
            assert response.json()["error"].startswith(("invalid Range header", "the Range header")), value
        refused = await client.get("/static/ui.css", headers={"Range": f"bytes={size}-"})
        assert refused.headers["content-range"] == f"bytes */{size}"
        part = await client.get("/static/ui.css", headers={"Range": "bytes=0-9"})
        assert part.status_code == 206 and len(part.content) == 10


async def test_the_live_list_stream_sends_only_the_events_it_documents(make_gateway, redis):
    """The live index's event name is sent as the SSE event's name. Was: any `type` a publisher (a backend's
    enqueue passes its own `appeared`) put in the body, a line break included: `status\\nevent: x` forged a frame."""
    gateway = await make_gateway()
    sid = "ses_" + "l" * 26
    odd = [{"type": "status\nevent: forged"}, {"type": "bogus"}, {}, {"type": 7}]
    async with (
        httpx.AsyncClient(base_url=gateway, timeout=20) as client,
        client.stream("GET", "/sessions/live/stream") as response,
    ):
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("event: snapshot"):
                break
        for body in [*odd, {"type": "status", "sessionId": sid, "sessionType": "ask", "status": "running"}]:
            await redis.publish(keys.LIVE_UPDATES, json.dumps({"sessionId": sid, "sessionType": "ask", **body}))
        names = []
        async for line in lines:
            if line.startswith("event: ") and line != "event: ping":
                names.append(line)
            if line.startswith("data: ") and '"running"' in line:  # the last one published
                break
    assert names == ["event: status"]
