"""OPENCODE_SERVERS, OPENCODE_URL alone (one server named `default`) and each server's basic auth."""

from __future__ import annotations

import base64

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.config import Secret, ServerConfig, Settings
from shared.dev.simulator.server import serve_in_thread
from shared.errors import ConfigError, InvalidInput, Unreached
from shared.opencode.client import OpenCodeClient
from shared.opencode.servers import OpenCodeServers


def test_opencode_url_alone_is_one_server_named_default():
    settings = Settings.from_env({"OPENCODE_URL": "http://oc:4096/"})
    assert settings.servers == (ServerConfig("default", "http://oc:4096"),)
    assert settings.servers[0].auth is None


def test_credentials_come_from_the_url_or_opencodes_own_variables_and_never_show():
    settings = Settings.from_env({"OPENCODE_URL": "http://me:s%40cret@oc:4096"})
    assert settings.opencode_url == "http://oc:4096"
    assert settings.servers[0].auth == ("me", "s@cret")
    assert "s@cret" not in repr(settings)
    settings = Settings.from_env({"OPENCODE_URL": "http://oc:4096", "OPENCODE_SERVER_PASSWORD": "pw"})
    assert settings.servers[0].auth == ("opencode", "pw")


def test_opencode_servers_names_several_each_with_its_own_credentials():
    settings = Settings.from_env(
        {"OPENCODE_SERVERS": "main=http://a:4096, repo-2=https://:pw2@b.example/oc/", "OPENCODE_URL": "http://x:1"}
    )
    assert [s.name for s in settings.servers] == ["main", "repo-2"]
    servers = OpenCodeServers(settings.servers)
    assert servers.config(None).name == "main"
    assert servers.config("repo-2") == ServerConfig("repo-2", "https://b.example/oc", Secret("pw2"))
    assert servers.config("main").auth is None
    with pytest.raises(InvalidInput, match="unknown server 'nope'"):
        servers.config("nope")


@pytest.mark.parametrize(
    "value", ["main", "Main=http://a:1", "a=http://x:1,a=http://y:1", "a=ftp://x", "a=http://x:1,", "=http://x"]
)
def test_a_bad_server_list_names_the_variable(value):
    with pytest.raises(ConfigError, match="OPENCODE_SERVERS"):
        Settings.from_env({"OPENCODE_SERVERS": value})


def test_the_client_sends_basic_auth_on_every_call():
    seen: list[str | None] = []

    async def status(request: Request) -> JSONResponse:
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != "Basic " + base64.b64encode(b"opencode:pw").decode():
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return JSONResponse({})

    app = Starlette(routes=[Route("/session/status", status)])

    async def go(url: str) -> None:
        async with OpenCodeClient(url, auth=("opencode", "pw")) as oc:
            assert await oc.status() == {}
        async with OpenCodeClient(url) as oc:
            with pytest.raises(Unreached, match="refused the credentials"):
                await oc.status()

    with serve_in_thread(app) as url:
        anyio.run(go, url)
    assert seen[0] == "Basic " + base64.b64encode(b"opencode:pw").decode() and seen[1] is None
