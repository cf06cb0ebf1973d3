"""enqueue's agent, model and permission rules: parsed, refused with exit 2 naming the rule, sent to OpenCode."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shared import commands
from shared.errors import InvalidInput
from shared.run_options import parse_agent, parse_model, parse_permission_rule
from tests.helpers import run_cli, single_error_line

pytestmark = pytest.mark.anyio


def test_permission_rules_parse_to_opencode_rules() -> None:
    assert parse_permission_rule("bash=ask") == {"permission": "bash", "pattern": "*", "action": "ask"}
    assert parse_permission_rule("bash:git *=allow") == {"permission": "bash", "pattern": "git *", "action": "allow"}
    assert parse_permission_rule("edit:src/a=b.py=deny") == {
        "permission": "edit",
        "pattern": "src/a=b.py",
        "action": "deny",
    }
    rule = {"permission": "read", "pattern": "*.env", "action": "deny"}
    assert parse_permission_rule(rule) == rule
    assert parse_model("openai/gpt-4.1") == {"providerID": "openai", "id": "gpt-4.1"}
    assert parse_model("openrouter/anthropic/claude") == {"providerID": "openrouter", "id": "anthropic/claude"}


@pytest.mark.parametrize("bad", ["bash", "bash=maybe", "=ask", "bash:=ask", "ba sh=ask", "bash=", ""])
def test_a_bad_rule_is_invalid_input_naming_it(bad: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_permission_rule(bad)
    assert repr(bad) in caught.value.message


async def _session_info(simulator_url: str, session_id: str) -> Any:
    async with httpx.AsyncClient(base_url=simulator_url) as client:
        return (await client.get(f"/session/{session_id}")).json()


async def test_enqueue_gives_opencode_the_rules(redis, db, opencode, simulator_url) -> None:
    state = await commands.enqueue(
        redis, db, opencode, session_type="ask", prompt="ECHO hi", permission=["bash=ask", "edit:*.md=deny"]
    )
    info = await _session_info(simulator_url, state["sessionId"])
    assert info["permission"] == [
        {"permission": "bash", "pattern": "*", "action": "ask"},
        {"permission": "edit", "pattern": "*.md", "action": "deny"},
    ]


async def test_cli_enqueue_with_rules_agent_and_model(redis_url, schema, simulator_url, redis, db) -> None:
    env = {"REDIS_URL": redis_url, "DATABASE_URL": schema, "OPENCODE_URL": simulator_url}
    args = ["enqueue", "--type", "ask", "--agent", "build", "--model", "fake/fake-model"]
    result = await run_cli([*args, "--permission", "bash=ask", "--permission", "bash:git *=allow"], env)
    assert result.returncode == 0, result
    info = await _session_info(simulator_url, result.stdout.strip())
    assert [r["pattern"] for r in info["permission"]] == ["*", "git *"]


@pytest.mark.parametrize(
    ("option", "value"), [("--permission", "bash=sometimes"), ("--model", "no-slash"), ("--agent", "two words")]
)
async def test_cli_bad_option_exits_2_naming_it(redis_url, schema, simulator_url, redis, db, option, value) -> None:
    env = {"REDIS_URL": redis_url, "DATABASE_URL": schema, "OPENCODE_URL": simulator_url}
    result = await run_cli(["enqueue", "--type", "ask", option, value], env)
    single_error_line(result, 2, value)
    assert await redis.keys("*") == []
    async with httpx.AsyncClient(base_url=simulator_url) as client:
        assert (await client.get("/session")).json() == []


@pytest.mark.parametrize("name", ["build\x1b[2J", "plan\x00", "a\x7fb", "x\u2028y", "tab\tbed"])
def test_agent_and_model_names_refuse_control_characters(name: str) -> None:
    """Was: only whitespace was refused; ESC, NUL or DEL went to OpenCode and back onto terminals that `show` it."""
    with pytest.raises(InvalidInput, match="invalid agent"):
        parse_agent(name)
    with pytest.raises(InvalidInput, match="invalid model"):
        parse_model(f"provider/{name}")
    assert parse_agent("build") == "build" and parse_model("p/m-1.5")["id"] == "m-1.5"
