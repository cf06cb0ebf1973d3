"""Record what a real `opencode serve` does for each scenario, as the fixtures the simulator is compared with.

    python -m tests.realopencode.record_fixtures --out tests/realopencode/fixtures [--only echo,read] [--with-fail]

installs the pinned opencode-ai (or `OPENCODE_VERSION`) with npm, starts it offline against the scripted model
(`tests.realopencode.harness`), and for each scenario writes `<out>/<name>.json`: the prompts, every `GET /event`
record of the session (the stored states and status changes, in order), the final `GET /session/{id}/message`
and `GET /session/{id}`, the collapsed `session.status` timeline, and the outcome our poller derives from the
final messages (`poller.completion.outcome`: the status and error text the archive gets). `record()` drives any
OpenCode-compatible server the same way, so `test_fidelity` runs it on the simulator and compares.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from poller.completion import outcome, run_finished
from shared.cli.stream import aiter_events
from shared.ids import new_message_id
from tests.realopencode.harness import install_opencode, opencode_version, run_opencode
from tests.realopencode.scripted_model import FAILURE, REJECTION, serve_scripted_model

JSON = dict[str, Any]
# Recorded from the pinned release and committed; REALOPENCODE_FIXTURES points test_fidelity at other recordings.
FIXTURES = Path(os.environ.get("REALOPENCODE_FIXTURES") or Path(__file__).resolve().parent / "fixtures")
# Not part of a run's own state: the title, token counts and diff summary of the session object.
SESSION_EVENTS = frozenset({"session.updated", "session.created", "session.diff"})


@dataclass(frozen=True)
class Scenario:
    """Prompts sent one after the other (each once the previous answer ended), and the archive's verdict."""

    name: str
    prompts: tuple[str, ...]
    status: str  # final status in the archive
    error: str | None = None  # error text in the archive
    session_type: str = "ask"
    cancel: str | None = None  # cancel (abort) once the answer streams "text", or once a "tool" runs
    e2e: bool = True  # also run end to end (CLI + pollers) against the real server
    long: bool = False  # recorded only with --with-fail: the real server retries for ~70 s


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("echo", ("ECHO hello from the test",), "completed"),
        Scenario("read", ("READ hello.txt and quote it",), "completed"),
        Scenario("reject", ("REJECT this prompt",), "error", REJECTION["message"]),
        Scenario("cancel", ("SLOW story to be cancelled",), "cancelled", cancel="text"),
        Scenario("cancel_tool", ("TOOL SLOW to be cancelled",), "cancelled", cancel="tool"),
        Scenario("followup", ("ECHO first question", "ECHO follow-up question"), "completed", session_type="chat"),
        Scenario("tool", ("TOOL run echo hello",), "completed", e2e=False),
        Scenario("toolerr", ("TOOLERR read a missing file",), "completed", e2e=False),
        Scenario("think", ("THINK then ECHO",), "completed", e2e=False),
        Scenario("fail", ("FAIL please",), "error", FAILURE["message"], e2e=False, long=True),
    )
}


class EventLog:
    """`GET /event` read in the background: every record, in order."""

    def __init__(self) -> None:
        self.events: list[JSON] = []
        self._changed = anyio.Event()

    def of(self, session_id: str) -> list[JSON]:
        return [e for e in self.events if (e.get("properties") or {}).get("sessionID") == session_id]

    async def wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Until `check()` holds, re-checked at each new event; AssertionError naming `what` after `timeout` s."""
        with anyio.move_on_after(timeout):
            while not check():
                self._changed = anyio.Event()
                await self._changed.wait()
            return
        raise AssertionError(f"no {what} after {timeout} s of GET /event")

    async def _read(self, response: httpx.Response, connected: anyio.Event) -> None:
        async for event in aiter_events(response):
            self.events.append(event.data)
            connected.set()
            self._changed.set()


@asynccontextmanager
async def event_log(http: httpx.AsyncClient) -> AsyncIterator[EventLog]:
    log = EventLog()
    async with (
        anyio.create_task_group() as tg,
        http.stream("GET", "/event", timeout=httpx.Timeout(30, read=None)) as response,
    ):
        connected = anyio.Event()
        tg.start_soon(log._read, response, connected)
        with anyio.fail_after(30):
            await connected.wait()  # server.connected: from here on nothing of ours is missed
        try:
            yield log
        finally:
            tg.cancel_scope.cancel()


def cancel_point(events: list[JSON], scenario: Scenario) -> bool:
    """Time to cancel: a text delta arrived (the answer streams), or a tool part is `running`."""
    if scenario.cancel == "text":
        return any(e["type"] == "message.part.delta" and e["properties"].get("field") == "text" for e in events)
    return any(
        e["type"] == "message.part.updated" and e["properties"]["part"].get("state", {}).get("status") == "running"
        for e in events
    )


def finished(messages: list[JSON], statuses: JSON, session_id: str, message_id: str) -> bool:
    """The completion rule the poller uses, for the answer to `message_id`."""
    if not messages or messages[-1]["info"].get("parentID") != message_id:
        return False
    return run_finished(messages, busy=session_id in statuses)


def settled(events: list[JSON], final: JSON) -> bool:
    """A `session.idle` came after the last message reached its final info (OpenCode goes idle once before an
    error or abort is stored, and once after)."""
    updates = [i for i, e in enumerate(events) if e["type"] == "message.updated" and e["properties"]["info"] == final]
    return bool(updates) and any(e["type"] == "session.idle" for e in events[updates[-1] :])


def collapse(items: list[Any]) -> list[Any]:
    return [item for i, item in enumerate(items) if i == 0 or items[i - 1] != item]


def status_timeline(events: list[JSON]) -> list[str]:
    """The session's `session.status` types in order, repeats collapsed: e.g. busy, idle."""
    return collapse([e["properties"]["status"]["type"] for e in events if e["type"] == "session.status"])


async def record(base_url: str, scenario: Scenario, *, timeout: float = 150.0) -> JSON:
    """Run one scenario on the server at `base_url` through its HTTP API, as our poller would drive it."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http, event_log(http) as log:
        session_id = (await http.post("/session", json={})).raise_for_status().json()["id"]
        aborted = None
        for text in scenario.prompts:
            message_id = new_message_id()
            body = {"messageID": message_id, "parts": [{"type": "text", "text": text}]}
            resp = await http.post(f"/session/{session_id}/prompt_async", json=body)
            assert resp.status_code == 204, (resp.status_code, resp.text)
            if scenario.cancel:
                what = "the answer streaming" if scenario.cancel == "text" else "a tool running"
                await log.wait(lambda: cancel_point(log.of(session_id), scenario), timeout, what)
                aborted = (await http.post(f"/session/{session_id}/abort")).raise_for_status().json()
            with anyio.fail_after(timeout):
                while True:
                    messages = (await http.get(f"/session/{session_id}/message")).raise_for_status().json()
                    statuses = (await http.get("/session/status")).raise_for_status().json()
                    if finished(messages, statuses, session_id, message_id):
                        break
                    await anyio.sleep(0.05)
            last = messages[-1]["info"]
            await log.wait(lambda: settled(log.of(session_id), last), timeout, "the session idle")  # noqa: B023
        messages = (await http.get(f"/session/{session_id}/message")).raise_for_status().json()
        session = (await http.get(f"/session/{session_id}")).raise_for_status().json()
        health = (await http.get("/global/health")).raise_for_status().json()
        events = log.of(session_id)
    status, error = outcome(messages, scenario.cancel is not None)
    return {
        "scenario": scenario.name,
        "opencodeVersion": health.get("version"),
        "prompts": list(scenario.prompts),
        "cancel": scenario.cancel,
        "abortAnswer": aborted,
        "outcome": {"status": status, "error": error},
        "statuses": status_timeline(events),
        "messages": messages,
        "session": session,
        "events": [e for e in events if e["type"] not in SESSION_EVENTS],
    }


def write_fixture(out: Path, recording: JSON) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{recording['scenario']}.json"
    path.write_text(json.dumps(recording, indent=1, ensure_ascii=False) + "\n")
    return path


async def record_real(out: Path, names: list[str]) -> None:
    version = opencode_version()
    binary = await anyio.to_thread.run_sync(install_opencode, version)
    with (
        tempfile.TemporaryDirectory(prefix="opencode-record-") as tmp,
        serve_scripted_model() as model,
        run_opencode(binary, Path(tmp), model.url, version=version) as server,
    ):
        print(f"opencode {version} at {server.url} (work dir {server.workdir})", file=sys.stderr)
        for name in names:
            started = anyio.current_time()
            recording = await record(server.url, SCENARIOS[name])
            path = write_fixture(out, recording)
            took = anyio.current_time() - started
            print(f"{name}: {recording['outcome']} {recording['statuses']} in {took:.1f} s -> {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.realopencode.record_fixtures", description=__doc__)
    parser.add_argument("--out", type=Path, default=FIXTURES, help=f"default: {FIXTURES}")
    parser.add_argument("--only", help="comma-separated scenario names (default: all but the long ones)")
    parser.add_argument("--with-fail", action="store_true", help="also record FAIL (the server retries ~70 s)")
    args = parser.parse_args(argv)
    names = [n for n, s in SCENARIOS.items() if args.with_fail or not s.long]
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - set(SCENARIOS))
        if unknown:
            parser.error(f"unknown scenarios {unknown}; known: {sorted(SCENARIOS)}")
    anyio.run(record_real, args.out, names)


if __name__ == "__main__":
    main()
