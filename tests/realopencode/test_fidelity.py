"""The simulator answers like the real server: compared with fixtures recorded from `opencode serve`.

`record_fixtures.py` recorded each scenario on the real server; here the same driver runs it on the simulator,
and the two recordings must agree on:

- shapes: the final message list and the session object have the same keys and value types at every level
  (lists element by element: same messages, same parts, in the same order);
- transitions: every message and every part goes through the same sequence of shapes (`GET /event` carries
  each stored state: tool pending -> running -> completed, text "" while it streams -> full text, ...), and the
  events come in the same order: status changes, stored states, deltas, errors and idles (OpenCode goes idle
  once *before* a failed or aborted message is final, and once after);
- outcome: the status and error text our poller derives for the archive.

The end-to-end half runs the e2e scenarios (and `fail`, whose retries take seconds here rather than ~70 s) through
our CLI and two poller processes against the simulator, and checks the archive gets the very status and error
text the real server's recording implies. No npm needed: only the committed recordings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.dev.simulator.app import create_simulator
from shared.dev.simulator.server import serve_in_thread
from shared.opencode.client import OpenCodeClient
from tests.realopencode.endtoend import RunScenario, check_archived
from tests.realopencode.harness import HELLO_TEXT
from tests.realopencode.record_fixtures import (
    FIXTURES,
    SCENARIOS,
    collapse,
    record,
    status_timeline,
)

pytestmark = pytest.mark.anyio

SIM_SPEED = 1.0
JSON = dict[str, Any]


def fixture(name: str) -> JSON:
    path = FIXTURES / f"{name}.json"
    if not path.exists():
        pytest.skip(f"no recorded fixture {path.name}: run python -m tests.realopencode.record_fixtures")
    return dict(json.loads(path.read_text()))


# -- structure -------------------------------------------------------------------------------------------------


def skeleton(value: Any) -> Any:
    """The JSON value with every leaf replaced by its type: keys and types at every level, nothing else."""
    if isinstance(value, dict):
        return {key: skeleton(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [skeleton(item) for item in value]
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"  # JSON has one number type; JavaScript writes 0 and 0.0 alike
    if isinstance(value, str):
        return "string"
    assert value is None, f"not JSON: {value!r}"
    return "null"


def differences(real: Any, sim: Any, where: str = "$") -> Iterator[str]:
    """Where two skeletons differ, as readable paths."""
    if isinstance(real, dict) and isinstance(sim, dict):
        for key in sorted(real.keys() - sim.keys()):
            yield f"{where}.{key}: only on the real server ({real[key]})"
        for key in sorted(sim.keys() - real.keys()):
            yield f"{where}.{key}: only on the simulator ({sim[key]})"
        for key in sorted(real.keys() & sim.keys()):
            yield from differences(real[key], sim[key], f"{where}.{key}")
    elif isinstance(real, list) and isinstance(sim, list):
        if len(real) != len(sim):
            yield f"{where}: {len(real)} items on the real server, {len(sim)} on the simulator"
        for i, (a, b) in enumerate(zip(real, sim, strict=False)):
            yield from differences(a, b, f"{where}[{i}]")
    elif real != sim:
        yield f"{where}: {real} on the real server, {sim} on the simulator"


def assert_same_shape(real: Any, sim: Any, what: str) -> None:
    diffs = list(differences(skeleton(real), skeleton(sim)))
    assert not diffs, f"{what} differ:\n  " + "\n  ".join(diffs)


# -- transitions -----------------------------------------------------------------------------------------------


def running_tool_shapes(recording: JSON) -> list[Any]:
    """The distinct shapes of tool states while `running` with their optional `metadata` (bash streams output)."""
    shapes = []
    for event in recording["events"]:
        state = event["properties"].get("part", {}).get("state", {}) if event["type"] == "message.part.updated" else {}
        if state.get("status") == "running" and "metadata" in state and skeleton(state) not in shapes:
            shapes.append(skeleton(state))
    return shapes


def _transition_shape(part: JSON) -> Any:
    """A part's shape for `entity_transitions`. A running tool may or may not carry `title` and `metadata` yet,
    depending on timing (OpenCode stores bash's first output right after it starts, and an abort can come
    before or after that): those two are compared by `running_tool_shapes` instead."""
    shape = skeleton(part)
    if part.get("type") == "tool" and part["state"].get("status") == "running":
        shape["state"] = {k: v for k, v in shape["state"].items() if k not in ("title", "metadata")}
    return shape


def entity_transitions(recording: JSON) -> dict[str, list[Any]]:
    """For each message and part (named by its position in the final list), the shapes it went through."""
    names: dict[str, str] = {}
    for i, message in enumerate(recording["messages"]):
        names[message["info"]["id"]] = f"message[{i}] ({message['info']['role']})"
        for j, part in enumerate(message["parts"]):
            names[part["id"]] = f"message[{i}].part[{j}] ({part['type']})"
    seen: dict[str, list[Any]] = {name: [] for name in names.values()}
    for event in recording["events"]:
        props = event["properties"]
        if event["type"] == "message.updated":
            seen[names[props["info"]["id"]]].append(skeleton(props["info"]))
        elif event["type"] == "message.part.updated":
            seen[names[props["part"]["id"]]].append(_transition_shape(props["part"]))
    return {name: collapse(shapes) for name, shapes in seen.items()}


def event_sequence(recording: JSON) -> list[str]:
    """Every event of the session in order, as what it stores or announces: status changes, errors and idles,
    each message's and part's state, the deltas. The prompt's message is left out: OpenCode stores it again
    (unchanged) after each step, in the background, so where that lands among the others is a matter of timing."""
    names: dict[str, str] = {}
    for i, message in enumerate(recording["messages"]):
        names[message["info"]["id"]] = f"message[{i}]"
        for j, part in enumerate(message["parts"]):
            names[part["id"]] = f"message[{i}].part[{j}]"
    out = []
    seen: set[tuple[str, str]] = set()
    for event in recording["events"]:
        kind, props = event["type"], event["properties"]
        if kind == "session.status":
            out.append(f"status {props['status']['type']}")
        elif kind == "session.error":
            out.append(f"session.error {props['error']['name']}")
        elif kind == "message.updated" and props["info"]["role"] == "assistant":
            info = props["info"]
            state = [f"error {info['error']['name']}"] if "error" in info else []
            state += [f"finish {info['finish']}"] if "finish" in info else []
            state += ["completed"] if "completed" in info["time"] else []
            out.append(f"{names[info['id']]}: {', '.join(state) or 'open'}")
        elif kind == "message.part.updated":
            part = props["part"]
            stage = part["state"]["status"] if part["type"] == "tool" else ""
            if stage == "running" and (part["id"], stage) in seen:
                continue  # bash stores its output as it comes; the last of it may land after an abort began
            seen.add((part["id"], stage))
            if part["type"] in ("text", "reasoning") and "time" in part:
                stage = "done" if "end" in part["time"] else "streaming"
            out.append(f"{names[part['id']]}: {part['type']} {stage}".rstrip())
        elif kind == "message.part.delta":
            out.append(f"{names[props['partID']]}: delta {props['field']}")
        elif kind != "message.updated":
            out.append(kind)
    return collapse(out)  # how many deltas, how often a running tool's output was stored: a matter of timing


def deltas_match_text(recording: JSON) -> bool:
    """Streamed deltas add up to each text or reasoning part's stored text (the partial one, when aborted)."""
    streamed: dict[str, str] = {}
    for event in recording["events"]:
        if event["type"] == "message.part.delta":
            part_id = event["properties"]["partID"]
            streamed[part_id] = streamed.get(part_id, "") + event["properties"]["delta"]
    parts = {p["id"]: p for m in recording["messages"] for p in m["parts"]}
    return bool(streamed) and all(parts[pid]["text"] == text for pid, text in streamed.items())


def kinds(messages: list[JSON]) -> list[JSON]:
    """The enum-like values that say what each message and part is: role, finish, error name, part type, tool
    name and state, step-finish reason."""
    out = []
    for message in messages:
        info = message["info"]
        summary = {"role": info["role"], "finish": info.get("finish"), "error": info.get("error", {}).get("name")}
        summary["parts"] = [
            [p["type"], p.get("tool"), p.get("state", {}).get("status"), p.get("reason")] for p in message["parts"]
        ]
        out.append(summary)
    return out


def status_shapes(recording: JSON) -> list[Any]:
    """The shapes of the session's status objects in order (retry carries attempt, message, next)."""
    return collapse([skeleton(e["properties"]["status"]) for e in recording["events"] if e["type"] == "session.status"])


def retry_attempts(recording: JSON) -> list[tuple[int, str]]:
    statuses = [e["properties"]["status"] for e in recording["events"] if e["type"] == "session.status"]
    return collapse([(s["attempt"], s["message"]) for s in statuses if s["type"] == "retry"])


def session_errors(recording: JSON) -> list[Any]:
    return [e["properties"]["error"] for e in recording["events"] if e["type"] == "session.error"]


# -- the simulator, driven like the real server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("sim-work")
    (work / "hello.txt").write_text(HELLO_TEXT)
    return work


@pytest.fixture(scope="module")
def sim_url(sim_workdir: Path) -> Iterator[str]:
    """At real speed (a SLOW answer streams ~5 s, long enough to cancel through the CLI), quick retries."""
    app = create_simulator(SIM_SPEED, directory=str(sim_workdir), retry_delays=(0.05,) * 5)
    with serve_in_thread(app) as url:
        yield url


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_simulator_matches_recording(name: str, sim_url: str) -> None:
    real = fixture(name)
    scenario = SCENARIOS[name]
    sim = await record(sim_url, scenario, timeout=60)

    assert real["outcome"] == {"status": scenario.status, "error": scenario.error}, "the real server's verdict"
    assert sim["outcome"] == real["outcome"]
    assert real["statuses"] == status_timeline(real["events"])
    assert sim["statuses"] == real["statuses"]
    assert sim["abortAnswer"] == real["abortAnswer"]

    assert kinds(sim["messages"]) == kinds(real["messages"])
    assert_same_shape(real["messages"], sim["messages"], "final message lists")
    assert_same_shape(real["session"], sim["session"], "session objects")
    real_steps, sim_steps = entity_transitions(real), entity_transitions(sim)
    assert real_steps.keys() == sim_steps.keys()
    for entity, shapes in real_steps.items():
        pairs = enumerate(zip(shapes, sim_steps[entity], strict=False))
        diffs = [d for i, (a, b) in pairs for d in differences(a, b, f"{entity} state {i}")]
        assert len(shapes) == len(sim_steps[entity]) and not diffs, (
            f"{entity}: {len(shapes)} states on the real server, {len(sim_steps[entity])} on the simulator\n  "
            + "\n  ".join(diffs)
        )
    assert event_sequence(sim) == event_sequence(real)
    real_running, sim_running = running_tool_shapes(real), running_tool_shapes(sim)
    if real_running and sim_running:
        assert sim_running == real_running
    assert status_shapes(sim) == status_shapes(real)
    assert retry_attempts(sim) == retry_attempts(real)
    assert_same_shape(session_errors(real), session_errors(sim), "session.error payloads")
    assert [e["name"] for e in session_errors(sim)] == [e["name"] for e in session_errors(real)]
    if any(e["type"] == "message.part.delta" for e in real["events"]):
        assert deltas_match_text(real) and deltas_match_text(sim)


@pytest.mark.parametrize("name", [name for name, s in SCENARIOS.items() if s.e2e or s.long])
async def test_archive_on_simulator_matches_real_outcome(name: str, sim_url: str, run_scenario: RunScenario) -> None:
    """Completion detection, error mapping and cancel: the same final status and error text in the archive as
    the real server's recording implies (test_real_opencode checks the real archive gets them too)."""
    real = fixture(name)
    scenario = SCENARIOS[name]
    archived = await run_scenario(scenario, sim_url)
    async with OpenCodeClient(sim_url) as opencode:
        check_archived(archived, scenario, await opencode.messages(archived.session_id))
    assert {"status": archived.status, "error": archived.error} == real["outcome"]
    assert kinds(archived.messages) == kinds(real["messages"])
