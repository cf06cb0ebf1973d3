"""End to end against a real `opencode serve` (npm opencode-ai, pinned; OPENCODE_VERSION picks another).

Each scenario is enqueued with our CLI (`opencode-sessions enqueue`, then `cancel` / `send`), two poller replicas
work it, and the archived row must equal what `GET /session/{id}/message` returns from the real server at the
end, with the right status and error text. The model is our scripted one (`scripted_model.py`).
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.opencode.client import OpenCodeClient
from tests.realopencode.endtoend import Archived, RunScenario, check_archived
from tests.realopencode.harness import HELLO_TEXT, RealOpenCode
from tests.realopencode.record_fixtures import SCENARIOS

pytestmark = [pytest.mark.anyio, pytest.mark.realopencode]


async def run(real_opencode: RealOpenCode, run_scenario: RunScenario, name: str) -> Archived:
    scenario = SCENARIOS[name]
    archived = await run_scenario(scenario, real_opencode.url)
    async with OpenCodeClient(real_opencode.url) as opencode:
        server_messages = await opencode.messages(archived.session_id)
    check_archived(archived, scenario, server_messages)
    return archived


def parts(archived: Archived, role: str = "assistant") -> list[dict[str, Any]]:
    return [p for m in archived.messages if m["info"]["role"] == role for p in m["parts"]]


async def test_plain_answer(real_opencode: RealOpenCode, run_scenario: RunScenario) -> None:
    archived = await run(real_opencode, run_scenario, "echo")
    assert [m["info"]["role"] for m in archived.messages] == ["user", "assistant"]
    texts = [p["text"] for p in parts(archived) if p["type"] == "text"]
    assert texts == ["ECHO: ECHO hello from the test"]
    assert archived.messages[-1]["info"]["finish"] == "stop"


async def test_tool_reads_a_file_in_the_work_dir(real_opencode: RealOpenCode, run_scenario: RunScenario) -> None:
    archived = await run(real_opencode, run_scenario, "read")
    assert [m["info"].get("finish") for m in archived.messages] == [None, "tool-calls", "stop"]
    (tool,) = [p for p in parts(archived) if p["type"] == "tool"]
    state = tool["state"]
    assert (tool["tool"], state["status"], state["input"]) == ("read", "completed", {"filePath": "hello.txt"})
    assert str(real_opencode.server.workdir / "hello.txt") in state["output"]  # OpenCode read it, in its work dir
    assert HELLO_TEXT.strip() in state["output"]
    assert HELLO_TEXT.strip() in archived.messages[-1]["parts"][1]["text"]  # and the answer quotes it
    assert archived.messages[-1]["parts"][1]["text"].startswith("The tool ran. Output: ")


async def test_model_error(real_opencode: RealOpenCode, run_scenario: RunScenario) -> None:
    archived = await run(real_opencode, run_scenario, "reject")
    error = archived.messages[-1]["info"]["error"]
    assert (error["name"], error["data"]["statusCode"], error["data"]["isRetryable"]) == ("APIError", 400, False)
    assert archived.messages[-1]["parts"] == []


async def test_cancel_mid_stream(real_opencode: RealOpenCode, run_scenario: RunScenario) -> None:
    archived = await run(real_opencode, run_scenario, "cancel")
    last = archived.messages[-1]
    assert last["info"]["error"] == {"name": "MessageAbortedError", "data": {"message": "Aborted"}}
    assert "finish" not in last["info"]
    (text,) = [p["text"] for p in last["parts"] if p["type"] == "text"]
    full = "Slow answer to: SLOW story to be cancelled"
    assert full.startswith(text) and text != full  # aborted mid-stream: the partial text is kept


async def test_cancel_while_a_tool_runs(real_opencode: RealOpenCode, run_scenario: RunScenario) -> None:
    archived = await run(real_opencode, run_scenario, "cancel_tool")
    last = archived.messages[-1]
    assert last["info"]["error"]["name"] == "MessageAbortedError"
    (tool,) = [p for p in last["parts"] if p["type"] == "tool"]
    # OpenCode ends an aborted bash call as completed, saying the user aborted it
    assert tool["state"]["status"] == "completed" and "User aborted the command" in tool["state"]["output"]
    assert tool["state"]["metadata"]["exit"] is None


async def test_follow_up_after_archive(real_opencode: RealOpenCode, run_scenario: RunScenario) -> None:
    archived = await run(real_opencode, run_scenario, "followup")
    assert [m["info"]["role"] for m in archived.messages] == ["user", "assistant", "user", "assistant"]
    texts = [p["text"] for p in parts(archived) if p["type"] == "text"]
    assert texts == ["ECHO: ECHO first question", "ECHO: ECHO follow-up question"]
