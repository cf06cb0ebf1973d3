"""The scripted runs: what the simulator's model "does" for a prompt, step by step, as OpenCode 1.18.33 stores it.

A prompt's keywords pick the script, like the scripted model of the real-server tests
(`tests/realopencode/scripted_model.py`; first match wins): FAIL (retries, then APIError 500), REJECT
(APIError 400 at once), QUESTION (a `question` call that waits for its answer, then a text step), TOOLERR /
READ / TOOL (a tool step, then a text step: `read` of a missing file, `read` of `hello.txt` in the session's
directory, or `bash` — which waits for a permission reply when the session's rules say `ask` for it; `BIGOUT <n>`:
a `bash` whose output is n bytes of a build log, as a `cat` of a big file gives, for the large-session tests), SLOW
(slow text), ECHO or anything else ("ECHO: <prompt>"); THINK adds a reasoning part. Every delay is divided by
the simulation's `speed`.
`tests/realopencode/test_fidelity.py` checks all this against recordings of the real server.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import os
import re

from shared.clock import now_ms
from shared.dev.simulator.asks import (
    PERMISSION_DENIED,
    PERMISSION_FEEDBACK,
    PERMISSION_REJECTED,
    QUESTION_DISMISSED,
    evaluate,
    question_output,
)
from shared.dev.simulator.engine import BUSY, JSON, Run, SimMessage, SimSession, Simulation, zero_tokens
from shared.ids import new_message_id

GENERATED_TITLE = "Scripted test session"
REASONING = "Thinking about the request step by step."
MODEL_URL = "http://127.0.0.1:8000/v1/chat/completions"
READ_FILE, MISSING_FILE = "hello.txt", "does-not-exist.txt"  # what READ and TOOLERR ask the `read` tool for
# OpenCode retries a 5xx after ~2, 4, 8, 16, 30 s; a hundredth of that keeps a FAIL run short.
DEFAULT_RETRY_DELAYS = (0.02, 0.04, 0.08, 0.16, 0.3)

# Delays in seconds at speed 1, near the captured run (a TOOL run takes ~0.6 s, a SLOW text ~5 s).
ASSISTANT_S = 0.02  # prompt or previous step -> new assistant message
FIRST_TOKEN_S = 0.06  # assistant message -> step-start
CHUNK_S, SLOW_CHUNK_S, REASONING_CHUNK_S = 0.02, 0.5, 0.05  # after each streamed delta
ARGS_S, SLOW_ARGS_S = 0.15, 1.2  # tool part `pending` while its arguments stream
BASH_S, SLOW_BASH_S = 0.1, 4.0  # `echo hello` / `sleep 4; echo hello` running
STEP_END_S = 0.02  # step-finish stored -> info.finish -> info.time.completed
STEP_SUMMARY_S = 0.05  # a step's end -> the prompt's message stored again with its diff summary
READ_S = 0.004
QUESTION_S = 0.01
# What QUESTION asks (the real-server tests' scripted model asks the same).
QUESTIONS: list[JSON] = [
    {
        "question": "Which color should the button be?",
        "header": "Button color",
        "options": [
            {"label": "Red", "description": "A warm color"},
            {"label": "Blue", "description": "A cool color"},
        ],
    }
]
REJECT_S = 0.08
ERROR_WINDOW_S = 0.02  # session idle before the failed message is final

BIG_OUTPUT = re.compile(r"BIGOUT (\d{1,10})")
MAX_BIG_OUTPUT = 512 * 1024 * 1024
METADATA_OUTPUT = 30_000
BUILD_LOG_LINE = "[build] src/session/module_042.ts(120,7): warning TS6133: 'unused' is declared but never read.\n"

_call_ids = itertools.count(1)


def _step_tokens() -> JSON:
    return {"total": 120, "input": 100, "output": 20, "reasoning": 0, "cache": {"read": 0, "write": 0}}


def _chunks(text: str, n: int) -> list[str]:
    n = max(1, min(n, len(text)))
    size, rest = divmod(len(text), n)
    bounds = list(itertools.accumulate([0] + [size + (i < rest) for i in range(n)]))
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def _api_error(retryable: bool) -> JSON:
    word, status, kind = ("failure", 500, "server_error") if retryable else ("rejection", 400, "invalid_request_error")
    message = f"Scripted {word} (prompt contained {'FAIL' if retryable else 'REJECT'})"
    body = json.dumps({"error": {"message": message, "type": kind, "code": f"scripted_{word}"}})
    headers = {"content-length": str(len(body)), "content-type": "application/json"}
    headers |= {"date": email.utils.formatdate(usegmt=True), "server": "fake-llm/1.0"}
    data = {"message": message, "statusCode": status, "isRetryable": retryable, "responseHeaders": headers}
    return {"name": "APIError", "data": data | {"responseBody": body, "metadata": {"url": MODEL_URL}}}


def read_file(directory: str, file_path: str) -> JSON:
    """The end state of OpenCode's `read` tool (without input and time): `completed` with the numbered lines,
    or `error` when there is no such file. A relative path is taken from the session's directory."""
    path = os.path.join(directory, file_path)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return {"status": "error", "error": f"File not found: {path}"}
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    numbered = "\n".join(f"{i}: {line}" for i, line in enumerate(lines, 1))
    output = f"<path>{path}</path>\n<type>file</type>\n<content>\n{numbered}\n\n"
    output += f"(End of file - total {len(lines)} lines)\n</content>"
    shown = "\n".join(lines)
    display = {"type": "file", "path": path, "text": shown, "lineStart": 1, "lineEnd": len(lines)}
    display |= {"totalLines": len(lines), "truncated": False}
    metadata = {"preview": "\n".join(lines[:20]), "truncated": False, "loaded": [], "display": display}
    return {"status": "completed", "output": output, "title": os.path.relpath(path, directory), "metadata": metadata}


async def answer(sim: Simulation, sess: SimSession, run: Run, user: SimMessage) -> None:
    """Play the script the prompt's keywords pick (see the module doc): the engine's run loop calls this."""
    prompt = "\n".join(p.get("text", "") for p in user.parts if p["type"] == "text").strip()
    slow = "SLOW" in prompt
    reasoning = REASONING if "THINK" in prompt else None
    if "FAIL" in prompt or "REJECT" in prompt:
        await _model_error(sim, sess, run, user, retryable="FAIL" in prompt)
    elif "QUESTION" in prompt:
        output = await _tool_step(
            sim, sess, run, user, "question", {"questions": QUESTIONS}, slow=False, reasoning=None
        )
        if output is not None:
            await _text_step(sim, sess, run, user, f"The tool ran. Output: {output.strip()[:200]}", slow=False)
    elif "TOOL" in prompt or "READ" in prompt or "BIGOUT" in prompt:
        if "TOOLERR" in prompt:
            tool, args = "read", {"filePath": MISSING_FILE}
        elif "READ" in prompt:
            tool, args = "read", {"filePath": READ_FILE}
        elif big := BIG_OUTPUT.search(prompt):
            tool, args = "bash", {"command": f"head -c {big.group(1)} build.log"}
        else:
            tool, args = "bash", {"command": "sleep 4; echo hello" if slow else "echo hello"}
        output = await _tool_step(sim, sess, run, user, tool, args, slow=slow, reasoning=reasoning)
        if output is not None:
            await _text_step(sim, sess, run, user, f"The tool ran. Output: {output.strip()[:200]}", slow=slow)
    elif slow:
        await _text_step(sim, sess, run, user, f"Slow answer to: {prompt[:200]}", slow=True, reasoning=reasoning)
    else:
        await _text_step(sim, sess, run, user, f"ECHO: {prompt[:500]}", slow=False, reasoning=reasoning)


async def _open_step(sim: Simulation, sess: SimSession, user: SimMessage) -> SimMessage:
    await sim.sleep(ASSISTANT_S)
    agent, model, cwd = user.info["agent"], user.info["model"], sess.info["directory"]
    info: JSON = {"id": new_message_id(), "sessionID": sess.id, "role": "assistant", "time": {"created": now_ms()}}
    info |= {"parentID": user.info["id"], "modelID": model["modelID"], "providerID": model["providerID"]}
    info |= {"mode": agent, "agent": agent, "path": {"cwd": cwd, "root": cwd}, "cost": 0, "tokens": zero_tokens()}
    message = SimMessage(info)
    sess.add(message)
    sim.message_updated(sess, message)
    if "summary" not in user.info:
        user.info["summary"] = {"diffs": []}
        sim.message_updated(sess, user)
    sim.set_status(sess, BUSY)  # OpenCode marks the session busy again once the step's message exists
    await sim.sleep(FIRST_TOKEN_S)
    if "summary" not in sess.info:  # the first run: OpenCode generates the title, sums up the diff
        if sess.generated_title:
            sess.info["title"] = GENERATED_TITLE
        sess.info["summary"] = {"additions": 0, "deletions": 0, "files": 0}
        sim.session_updated(sess)
        sim.bus.publish("session.diff", {"sessionID": sess.id, "diff": []})
    return message


async def _text_step(
    sim: Simulation,
    sess: SimSession,
    run: Run,
    user: SimMessage,
    text: str,
    *,
    slow: bool,
    reasoning: str | None = None,
) -> None:
    message = await _open_step(sim, sess, user)
    sim.add_part(sess, message, {"type": "step-start", "snapshot": sess.snapshot})
    if reasoning:
        await _stream(sim, sess, run, message, "reasoning", reasoning, 4, REASONING_CHUNK_S)
    await _stream(sim, sess, run, message, "text", text, 10 if slow else 3, SLOW_CHUNK_S if slow else CHUNK_S)
    await _close_step(sim, sess, user, message, "stop")


async def _tool_step(
    sim: Simulation,
    sess: SimSession,
    run: Run,
    user: SimMessage,
    tool: str,
    args: JSON,
    *,
    slow: bool,
    reasoning: str | None,
) -> str | None:
    """One tool call (`bash` or `read`) as OpenCode stores it; returns what the model gets back, or None when the
    run stops there: a permission rejected without a message, a question dismissed (OpenCode 1.18.33 ends its loop
    after that step, `finish: "tool-calls"`; with a message, the model is told and goes on)."""
    message = await _open_step(sim, sess, user)
    sim.add_part(sess, message, {"type": "step-start", "snapshot": sess.snapshot})
    if reasoning:
        await _stream(sim, sess, run, message, "reasoning", reasoning, 4, REASONING_CHUNK_S)
    fields = {"type": "tool", "callID": f"call_{next(_call_ids):06d}", "tool": tool}
    part = sim.add_part(sess, message, fields | {"state": {"status": "pending", "input": {}, "raw": ""}})
    await sim.sleep(SLOW_ARGS_S if slow else ARGS_S)
    start = now_ms()
    running = {"status": "running", "input": args, "time": {"start": start}}
    sim.set_tool(sess, part, running)
    ended: JSON
    refused = await _permission(sim, sess, part, tool, args) if tool == "bash" else None
    if refused is not None:
        ended = {"status": "error", "error": refused}
        output = refused
    elif tool == "question":
        ended = await _question(sim, sess, part, args)
        output = str(ended.get("output", ended.get("error")))
    elif tool == "read":
        await sim.sleep(READ_S)
        ended = read_file(sess.info["directory"], args["filePath"])
        output = str(ended.get("output", ended.get("error")))
    else:
        await sim.sleep(0.01)
        sim.set_tool(sess, part, running | {"metadata": {"output": ""}})  # bash streams its output
        await sim.sleep(SLOW_BASH_S if slow else BASH_S)
        output = _output_of(args["command"])
        shown = output[:METADATA_OUTPUT]  # OpenCode's bash keeps the whole output in `output` alone
        sim.set_tool(sess, part, running | {"metadata": {"output": shown}})
        metadata = {"output": shown, "exit": 0, "truncated": False}
        ended = {"status": "completed", "output": output, "title": args["command"], "metadata": metadata}
    sim.set_tool(sess, part, {"input": args} | ended | {"time": {"start": start, "end": now_ms()}})
    await _close_step(sim, sess, user, message, "tool-calls")
    run.blocked = ended.get("error") in (PERMISSION_REJECTED, QUESTION_DISMISSED)
    return None if run.blocked else output


def _output_of(command: str) -> str:
    """What the scripted `bash` prints: `hello`, or a build log's first n bytes (BIGOUT)."""
    if not command.startswith("head -c "):
        return "hello\n"
    size = min(int(command.split()[2]), MAX_BIG_OUTPUT)
    return (BUILD_LOG_LINE * (size // len(BUILD_LOG_LINE) + 1))[:size]


async def _permission(sim: Simulation, sess: SimSession, part: JSON, tool: str, args: JSON) -> str | None:
    """The session's rules for this call: None to run it, or the error the tool part ends with. `ask` waits
    (the part stays `running`) for a reply."""
    command = str(args.get("command", ""))
    action = evaluate(sess.info.get("permission") or [], tool, command)
    if action == "deny":
        return PERMISSION_DENIED
    if action != "ask":
        return None
    request = {"sessionID": sess.id, "permission": tool, "patterns": [command], "metadata": {"command": command}}
    request |= {
        "always": [command.split(" ")[0] + " *"],
        "tool": {"messageID": part["messageID"], "callID": part["callID"]},
    }
    reply = await sim.asks.ask("permission", request)
    if reply["reply"] != "reject":
        return None
    return PERMISSION_FEEDBACK + reply["message"] if reply.get("message") else PERMISSION_REJECTED


async def _question(sim: Simulation, sess: SimSession, part: JSON, args: JSON) -> JSON:
    """The `question` tool's end state (without input and time), once the question is answered or dismissed."""
    await sim.sleep(QUESTION_S)
    questions = args["questions"]
    request = {"sessionID": sess.id, "questions": questions}
    reply = await sim.asks.ask(
        "question", request | {"tool": {"messageID": part["messageID"], "callID": part["callID"]}}
    )
    if "answers" not in reply:
        return {"status": "error", "error": QUESTION_DISMISSED}
    title = f"Asked {len(questions)} question{'s' if len(questions) != 1 else ''}"
    output = question_output(questions, reply["answers"])
    metadata = {"answers": reply["answers"], "truncated": False}
    return {"status": "completed", "output": output, "title": title, "metadata": metadata}


async def _stream(
    sim: Simulation, sess: SimSession, run: Run, message: SimMessage, kind: str, text: str, pieces: int, delay: float
) -> None:
    """A text or reasoning part: stored as "" while its deltas stream, with the full text once it ends."""
    part = sim.add_part(sess, message, {"type": kind, "text": "", "time": {"start": now_ms()}})
    run.live[part["id"]] = ""
    for piece in _chunks(text, pieces):
        run.live[part["id"]] += piece
        delta = {"messageID": message.info["id"], "partID": part["id"], "field": "text", "delta": piece}
        sim.bus.publish("message.part.delta", {"sessionID": sess.id} | delta)
        await sim.sleep(delay)
    del run.live[part["id"]]
    part["text"] = text
    part["time"]["end"] = now_ms()
    sim.part_updated(sess, part)


async def _close_step(sim: Simulation, sess: SimSession, user: SimMessage, message: SimMessage, reason: str) -> None:
    fields = {"type": "step-finish", "reason": reason, "snapshot": sess.snapshot, "cost": 0}
    sim.add_part(sess, message, fields | {"tokens": _step_tokens()})
    await sim.sleep(STEP_END_S)
    message.info |= {"tokens": _step_tokens(), "finish": reason}
    sim.message_updated(sess, message)
    await sim.sleep(STEP_END_S)
    message.info["time"]["completed"] = now_ms()
    sim.message_updated(sess, message)
    tokens = sess.info["tokens"]
    tokens["input"] += 100
    tokens["output"] += 20
    sim.session_updated(sess)
    sim.set_status(sess, BUSY)  # the loop's next turn starts busy, before it knows whether one more step runs
    # OpenCode sums up each finished step's diff in the background and stores the prompt's message again
    # (unchanged here: no file changes); for the last step that lands after the session went idle.
    sim.later(STEP_SUMMARY_S, lambda: sim.message_updated(sess, user))


async def _model_error(sim: Simulation, sess: SimSession, run: Run, user: SimMessage, *, retryable: bool) -> None:
    message = await _open_step(sim, sess, user)
    error = _api_error(retryable)
    if retryable:
        run.retrying = True
        for attempt, delay in enumerate(sim.retry_delays, 1):
            next_ms = now_ms() + round(delay / sim.speed * 1000)
            retry = {"type": "retry", "attempt": attempt, "message": error["data"]["message"], "next": next_ms}
            sim.set_status(sess, retry)
            await sim.sleep(delay)
            sim.set_status(sess, BUSY)
        run.retrying = False
    else:
        await sim.sleep(REJECT_S)
    # OpenCode reports the session idle before the failed message is final: pollers must re-read it.
    run.error = error
    sim.bus.publish("session.error", {"sessionID": sess.id, "error": error})
    sim.set_status(sess, None)
    await sim.sleep(ERROR_WINDOW_S)
    message.info["error"] = error
    message.info["time"]["completed"] = now_ms()
    sim.message_updated(sess, message)
    run.error = None
