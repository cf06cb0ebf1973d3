"""Odd parameter values are a 400 naming the parameter, never a 500: what a fuzzer rarely guesses."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

pytestmark = pytest.mark.anyio
SID = "ses_0123456789abcdefABCDEFGHIJ"


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=%C2%B2", "limit"),  # "²": str.isdigit() says yes, int() says no
        ("limit=%D9%A1%D9%A2", "limit"),  # Arabic-Indic "12": int() takes it
        ("limit=" + "9" * 5000, "limit"),  # past int()'s digit limit
        ("limit=+5", "limit"),
        ("limit=", "limit"),
        (f"before={cursor(f'{10**20}:{SID}')}", "before"),  # past datetime's range
        (f"before={cursor(f'-62135596800001:{SID}')}", "before"),
        (f"before={cursor(f'١٢:{SID}')}", "before"),
        (f"before={cursor(f'+12:{SID}')}", "before"),
        ("before=" + "A" * 5000, "before"),
        ("messages=maybe", "messages"),
        ("live=2", "live"),
        ("type=ASK", "type"),
    ],
)
async def test_an_odd_parameter_is_a_400_naming_it(make_gateway, db, query, parameter):
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway) as client:
        for path in ("/sessions", "/tickets/T-1/sessions"):
            if parameter in ("live", "type") and path != "/sessions":
                continue
            response = await client.get(f"{path}?{query}")
            assert response.status_code == 400, (path, query, response.text)
            assert response.json()["detail"] == {"parameter": parameter}
            assert parameter in response.json()["error"]


@pytest.mark.parametrize("value", ["bogus", "ASK", ""])
async def test_the_live_list_stream_refuses_an_odd_type_as_the_live_list_does(make_gateway, value):
    """Was: any `type` opened a stream that matched nothing, where the list answers a 400."""
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        async with client.stream("GET", "/sessions/live/stream", params={"type": value}) as response:
            status = response.status_code
            body = await response.aread() if status != 200 else b""  # a stream would never end
        listed = await client.get("/sessions", params={"live": "true", "type": value})
    assert status == 400, body
    refused = {"error": "type must be one of ask, chat, admin", "detail": {"parameter": "type"}}
    assert json.loads(body) == listed.json() == refused


async def test_the_openapi_document_names_the_live_list_streams_type_and_its_400(make_gateway):
    gateway = await make_gateway()
    async with httpx.AsyncClient(base_url=gateway) as client:
        spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/sessions/live/stream"]["get"]
    [kind] = [p for p in operation["parameters"] if p["name"] == "type"]
    assert kind["in"] == "query" and kind["schema"] == {"enum": ["ask", "chat", "admin"]}
    assert "400" in operation["responses"]
