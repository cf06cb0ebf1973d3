"""A scripted OpenAI-compatible model server, so a real `opencode serve` can run offline on loopback.

Standard library only (a ThreadingHTTPServer), served in a daemon thread by `serve_scripted_model()`, or as a
process with `python -m tests.realopencode.scripted_model --port 0 --port-file PATH`. Endpoints:
`GET /v1/models`, `POST /v1/chat/completions` (streamed as SSE, or not), `GET /health`.

The script is picked from the last user message of each request by the keywords the simulator reacts to
(`shared.dev.simulator.scenarios`), first match wins, so one scenario list drives both servers:

    FAIL     HTTP 500 (OpenCode retries it ~5 times over ~70 s, then errors)
    REJECT   HTTP 400 (OpenCode errors at once)
    QUESTION a `question` call (OpenCode waits for a person's answer), then text quoting the tool's result
    TOOLERR  a `read` of a missing file (the tool part ends in `error`), then a text answer
    READ     a `read` of `hello.txt` in OpenCode's working directory, then a text answer quoting it
    TOOL     a `bash` call `echo hello` (with SLOW: arguments stream ~1.2 s, `sleep 4; echo hello`; with NULBYTE:
             `printf 'before\\000after\\n'`, a NUL on stdout), then text
    SLOW     text in 10 chunks over ~5 s
    THINK    streamed reasoning before the answer (with any of the text scripts)
    ECHO / anything else: "ECHO: <prompt>"

Requests without `tools` (OpenCode's title generator) always get the short title "Scripted test session".
Once a tool result follows the last user message, the answer is "The tool ran. Output: <result[:200]>".
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_ID = "fake-model"
TITLE = "Scripted test session"
REASONING = "Thinking about the request step by step."
READ_FILE = "hello.txt"
MISSING_FILE = "does-not-exist.txt"
USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
FAILURE = {"message": "Scripted failure (prompt contained FAIL)", "type": "server_error", "code": "scripted_failure"}
REJECTION = {
    "message": "Scripted rejection (prompt contained REJECT)",
    "type": "invalid_request_error",
    "code": "scripted_rejection",
}
SLOW_CHUNKS, SLOW_CHUNK_S = 10, 0.5  # a SLOW answer streams for ~5 s
CHUNK_S = 0.02
ARGS_S, SLOW_ARGS_S = 0.05, 0.4  # per argument chunk (3 chunks)
REASONING_CHUNK_S = 0.05

# What QUESTION asks: the simulator's scenario asks the same (shared.dev.simulator.scenarios.QUESTIONS).
QUESTIONS = [
    {
        "question": "Which color should the button be?",
        "header": "Button color",
        "options": [
            {"label": "Red", "description": "A warm color"},
            {"label": "Blue", "description": "A cool color"},
        ],
    }
]

_ids = itertools.count(1)


@dataclass(frozen=True)
class Plan:
    """What to answer: an HTTP error, a tool call, or text (optionally preceded by reasoning)."""

    kind: str  # "error", "tool" or "text"
    status: int = 200
    tool: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    arg_delay: float = ARGS_S
    text: str = ""
    chunks: int = 3
    delay: float = CHUNK_S
    reasoning: str | None = None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(item.get("text", "")) if isinstance(item, dict) else str(item)
            for item in content
            if isinstance(item, str) or (isinstance(item, dict) and item.get("type") == "text")
        )
    return "" if content is None else str(content)


def plan(body: dict[str, Any]) -> Plan:
    """The scripted answer to one chat completion request."""
    messages = body.get("messages") or []
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    last_user = users[-1] if users else -1
    prompt = _text_of(messages[last_user].get("content")).strip() if users else ""
    tool_results = [m for m in messages[last_user + 1 :] if m.get("role") == "tool"]
    slow = "SLOW" in prompt
    reasoning = REASONING if "THINK" in prompt else None
    if not body.get("tools"):
        return Plan("text", text=TITLE, chunks=1, delay=0)
    if "FAIL" in prompt:
        return Plan("error", status=500)
    if "REJECT" in prompt:
        return Plan("error", status=400)
    if "QUESTION" in prompt:
        if tool_results:
            output = _text_of(tool_results[-1].get("content")).strip()
            return Plan("text", text=f"The tool ran. Output: {output[:200]}")
        return Plan("tool", tool="question", args={"questions": QUESTIONS})
    if "TOOL" in prompt or "READ" in prompt:
        if tool_results:
            output = _text_of(tool_results[-1].get("content")).strip()
            text = f"The tool ran. Output: {output[:200]}"
            return Plan("text", text=text, chunks=SLOW_CHUNKS if slow else 3, delay=SLOW_CHUNK_S if slow else CHUNK_S)
        if "TOOLERR" in prompt:
            return Plan("tool", tool="read", args={"filePath": MISSING_FILE}, reasoning=reasoning)
        if "READ" in prompt:
            return Plan("tool", tool="read", args={"filePath": READ_FILE}, reasoning=reasoning)
        command = "sleep 4; echo hello" if slow else "echo hello"
        if "NULBYTE" in prompt:
            command = "printf 'before\\000after\\n'"  # a NUL byte on stdout, between two words
        delay = SLOW_ARGS_S if slow else ARGS_S
        return Plan("tool", tool="bash", args={"command": command}, arg_delay=delay, reasoning=reasoning)
    if slow:
        return Plan(
            "text", text=f"Slow answer to: {prompt[:200]}", chunks=SLOW_CHUNKS, delay=SLOW_CHUNK_S, reasoning=reasoning
        )
    return Plan("text", text=f"ECHO: {prompt[:500]}", reasoning=reasoning)


def _chunks(text: str, n: int) -> list[str]:
    n = max(1, min(n, len(text)))
    size, rest = divmod(len(text), n)
    bounds = list(itertools.accumulate([0] + [size + (i < rest) for i in range(n)]))
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


class ScriptedModelHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests: list[dict[str, Any]]  # set per server: every completion request with its plan

    def version_string(self) -> str:
        return "fake-llm/1.0"  # the `server` header OpenCode copies into APIError.data.responseHeaders

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "fake"}
            self._json(200, {"object": "list", "data": [model]})
        elif self.path == "/health":
            self._json(200, {"ok": True})
        else:
            self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._json(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
            return
        script = plan(body)
        self.requests.append({"request": body, "plan": script.__dict__})
        if script.kind == "error":
            self._json(script.status, {"error": FAILURE if script.status >= 500 else REJECTION})
            return
        completion_id, created = f"chatcmpl-fake-{next(_ids):06d}", int(time.time())
        if not body.get("stream"):
            self._json(200, _completion(completion_id, created, script))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for record in _stream(completion_id, created, script):
                self._sse(record)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # OpenCode aborted the request

    def _sse(self, record: Any) -> None:
        if isinstance(record, float):
            time.sleep(record)
            return
        data = f"data: {record if isinstance(record, str) else json.dumps(record)}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def _completion(completion_id: str, created: int, script: Plan) -> dict[str, Any]:
    message: dict[str, Any]
    if script.kind == "tool":
        call = {"name": script.tool, "arguments": json.dumps(script.args)}
        message = {"role": "assistant", "content": None, "tool_calls": [{"id": f"call_{completion_id[-6:]}"}]}
        message["tool_calls"][0] |= {"type": "function", "function": call}
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": script.text}
        if script.reasoning:
            message["reasoning_content"] = script.reasoning
        finish = "stop"
    choice = {"index": 0, "message": message, "finish_reason": finish}
    head = {"id": completion_id, "object": "chat.completion", "created": created, "model": MODEL_ID}
    return head | {"choices": [choice], "usage": USAGE}


def _stream(completion_id: str, created: int, script: Plan) -> Iterator[Any]:
    """SSE records (dicts, or the final "[DONE]") interleaved with float pauses in seconds."""
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": MODEL_ID}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return head | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    if script.reasoning:
        for piece in _chunks(script.reasoning, 4):
            yield chunk({"reasoning_content": piece})
            yield REASONING_CHUNK_S
    if script.kind == "tool":
        call_id = f"call_{completion_id[-6:]}"
        function = {"name": script.tool, "arguments": ""}
        yield chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": function}]})
        for piece in _chunks(json.dumps(script.args), 3):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            yield script.arg_delay
        yield chunk({}, "tool_calls")
    else:
        for piece in _chunks(script.text, script.chunks):
            yield chunk({"content": piece})
            if script.delay:
                yield script.delay
        yield chunk({}, "stop")
    yield head | {"choices": [], "usage": USAGE}  # as with stream_options.include_usage
    yield "[DONE]"


class ScriptedModel:
    """A running scripted model: its base URL (…/v1) and every request it answered."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        handler = type("Handler", (ScriptedModelHandler,), {"requests": self.requests})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://{host}:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-model", daemon=True)

    def start(self) -> ScriptedModel:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def serve_scripted_model(host: str = "127.0.0.1", port: int = 0) -> Iterator[ScriptedModel]:
    """Serve the scripted model in a daemon thread of this process."""
    model = ScriptedModel(host, port).start()
    try:
        yield model
    finally:
        model.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args()
    model = ScriptedModel(args.host, args.port)
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(model.port))
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"scripted model listening on {model.url}", flush=True)
    with suppress(KeyboardInterrupt):
        model._server.serve_forever()


if __name__ == "__main__":
    main()
