"""Edge input to `opencode-sessions`, as a user gives it: every bad value is exit 2 with one line naming it,
found before any server is contacted (the servers below are unreachable); `--metadata @FILE` and `-`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.cli.arguments import MAX_INPUT_BYTES
from shared.commands import MAX_PROMPT_CHARS
from shared.ids import SessionId
from shared.store import archive

pytestmark = pytest.mark.anyio

SCRIPT = Path(sys.executable).with_name("opencode-sessions")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-c", "from shared.cli import main; main()"]
SID = b"ses_" + b"a" * 26
UNREACHABLE = {
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "DATABASE_URL": "postgresql://127.0.0.1:1/none",
    "OPENCODE_URL": "http://127.0.0.1:1",
    "GATEWAY_URL": "http://127.0.0.1:1",
}
DEEP_OBJECT = b'{"a":' * 1000 + b"1" + b"}" * 1000
DEEP_ARRAY = b"[" * 1000 + b"]" * 1000


def run(args: list[bytes], stdin: bytes = b"", env: dict[str, Any] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Arguments as bytes, as a shell passes them: they need not be UTF-8."""
    child_env = {k.encode(): v.encode() for k, v in os.environ.items() if k not in UNREACHABLE and k != "GATEWAY_TOKEN"}
    child_env |= {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in (UNREACHABLE | (env or {})).items()}
    return subprocess.run(
        [*(c.encode() for c in COMMAND), *args],
        input=stdin,
        env=child_env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, data: bytes) -> bytes:
    path = tmp_path / "metadata.json"
    path.write_bytes(data)
    return b"@" + str(path).encode()


CASES: dict[str, tuple[list[bytes], bytes, dict[str, Any], str]] = {
    "metadata nested 1000 deep": (
        [b"enqueue", b"--type", b"ask", b"--metadata", DEEP_OBJECT],
        b"",
        {},
        "nested deeper",
    ),
    "metadata arrays 1000 deep": ([b"enqueue", b"--type", b"ask", b"--metadata", DEEP_ARRAY], b"", {}, "nested deeper"),
    "deep metadata on stdin": ([b"enqueue", b"--type", b"ask", b"--metadata", b"-"], DEEP_OBJECT, {}, "nested deeper"),
    "metadata file missing": (
        [b"enqueue", b"--type", b"ask", b"--metadata", b"@/nonexistent/m.json"],
        b"",
        {},
        "cannot read --metadata",
    ),
    "metadata stdin not UTF-8": (
        [b"enqueue", b"--type", b"ask", b"--metadata", b"-"],
        b'{"k": "\xff"}',
        {},
        "--metadata (standard input) is not valid UTF-8: byte 0xff",
    ),
    "prompt stdin not UTF-8": (
        [b"enqueue", b"--type", b"ask", b"--prompt", b"-"],
        b"hi \xc3(",
        {},
        "--prompt (standard input) is not valid UTF-8: byte 0xc3 at offset 3",
    ),
    "send stdin not UTF-8": ([b"send", SID, b"-"], b"\xff", {}, "TEXT (standard input) is not valid UTF-8"),
    "NUL in a prompt on stdin": (
        [b"enqueue", b"--type", b"ask", b"--prompt", b"-"],
        b"a\x00b",
        {},
        "--prompt (standard input) contains a NUL character",
    ),
    "NUL in a follow-up on stdin": (
        [b"send", SID, b"-"],
        b"a\x00b",
        {},
        "TEXT (standard input) contains a NUL character",
    ),
    "title not UTF-8": ([b"enqueue", b"--type", b"ask", b"--title", b"t\xff"], b"", {}, "--title is not valid UTF-8"),
    "prompt argument not UTF-8": ([b"send", SID, b"\xfe\xff"], b"", {}, "TEXT is not valid UTF-8"),
    "session id not UTF-8": ([b"show", b"ses_\xff"], b"", {}, "SESSION_ID is not valid UTF-8"),
    "ticket not UTF-8": ([b"history", b"--ticket", b"T-\xff"], b"", {}, "--ticket is not valid UTF-8"),
    "token from the environment not UTF-8": (
        [b"watch", SID],
        b"",
        {"GATEWAY_TOKEN": b"\xff"},
        "--token is not valid UTF-8",
    ),
    "title too long": ([b"enqueue", b"--type", b"ask", b"--title", b"t" * 501], b"", {}, "title must be 1-500"),
    "prompt too long": ([b"send", SID, b"-"], b"p" * (MAX_PROMPT_CHARS + 1), {}, "longer than 1000000 characters"),
    "stdin too large": ([b"send", SID, b"-"], b"p" * (MAX_INPUT_BYTES + 1), {}, f"larger than {MAX_INPUT_BYTES} bytes"),
    "both read stdin": (
        [b"enqueue", b"--type", b"ask", b"--prompt", b"-", b"--metadata", b"-"],
        b"{}",
        {},
        "cannot both read standard input",
    ),
    "gateway URL malformed": ([b"watch", SID, b"--gateway", b"http://[::1"], b"", {}, "invalid gateway URL"),
    # no header carries them: was exit 1, an unexpected UnicodeEncodeError or an "unreachable" gateway
    "token not ASCII": ([b"watch", SID, b"--token", "é".encode()], b"", {}, "--token (GATEWAY_TOKEN) is not a bearer"),
    "token with a newline": ([b"watch", SID, b"--token", b"a\nb"], b"", {}, "is not a bearer token"),
    "token from the environment not ASCII": ([b"watch", SID], b"", {"GATEWAY_TOKEN": "é".encode()}, "not a bearer"),
    # click's FloatRange lets NaN by (no comparison with it fails): a reconnect that never gave up
    "reconnect timeout NaN": ([b"watch", SID, b"--reconnect-timeout", b"nan"], b"", {}, "--reconnect-timeout must be"),
    # JSON has no NaN or Infinity (1e999 reads as it): PostgreSQL refused them after OpenCode made the session
    "metadata NaN": ([b"enqueue", b"--type", b"ask", b"--metadata", b'{"a":NaN}'], b"", {}, "holds nan, which is not"),
    "metadata 1e999": ([b"enqueue", b"--type", b"ask", b"--metadata", b'{"a":[1e999]}'], b"", {}, "holds inf"),
    "metadata -Infinity": ([b"enqueue", b"--type", b"ask", b"--metadata", b'{"a":-Infinity}'], b"", {}, "holds -inf"),
    "metadata integer of 5,000 digits": (
        [b"enqueue", b"--type", b"ask", b"--metadata", b'{"a":' + b"9" * 5000 + b"}"],
        b"",
        {},
        "metadata holds an integer of more than 1000 digits",
    ),
    "metadata integer of 2,000 digits": (
        [b"enqueue", b"--type", b"ask", b"--metadata", b'{"a":{"b":' + b"9" * 2000 + b"}}"],
        b"",
        {},
        "holds an integer of more than 1000 digits",
    ),
    "simulator speed NaN": ([b"dev", b"--sim-speed", b"nan"], b"", {}, "--sim-speed must be a number, not nan"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_exit_2_with_one_line_naming_it(case):
    args, stdin, env, says = case
    result = run(args, stdin, env)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert says in stderr
    assert result.stdout == b""


def test_metadata_from_a_file_is_read_like_stdin(tmp_path):
    result = run([b"enqueue", b"--type", b"ask", b"--metadata", write(tmp_path, DEEP_OBJECT)])
    assert (result.returncode, result.stderr.decode()) == (2, "error: metadata is nested deeper than 32 levels\n")


@pytest.fixture
def env(redis_url: str, schema: str, simulator_url: str, redis: Any, db: Any) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "DATABASE_URL": schema, "OPENCODE_URL": simulator_url}


async def test_metadata_from_a_file_and_from_stdin(env, db, tmp_path):
    meta = {"source": "file", "nested": {"list": [1, "two"]}, "text": "ünïcode ✓"}
    for args, stdin in (
        ([b"--metadata", write(tmp_path, json.dumps(meta).encode())], b""),
        ([b"--metadata", b"-"], json.dumps(meta).encode()),
    ):
        result = run([b"enqueue", b"--type", b"ask", *args, b"--json"], stdin, env)
        assert (result.returncode, result.stderr) == (0, b""), result
        state = json.loads(result.stdout)
        assert state["metadata"] == meta
        row = await archive.fetch(db, SessionId(state["sessionId"]))
        assert row is not None and row.user_metadata == meta
