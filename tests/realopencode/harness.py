"""A real `opencode serve`, offline on loopback, backed by our scripted model: install, start, stop.

The pinned release is `DEFAULT_OPENCODE_VERSION`; `OPENCODE_VERSION=x.y.z` picks another one. It is installed
from the npm registry with `npm install --prefix` into `${XDG_CACHE_HOME:-~/.cache}/opencode-session-layer/
opencode-<version>` (outside the repository, reused across runs). Each server gets a fresh temporary HOME and
XDG directories (its own database, no user config) and a work directory that is a git repository holding
`opencode.json` (one custom OpenAI-compatible provider pointing at the scripted model, everything allowed,
nothing auto-updated or shared) and `hello.txt`. With the environment below the server opens no connection
except to loopback.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shared.dev.processes import free_port
from tests.realopencode.scripted_model import ScriptedModel

DEFAULT_OPENCODE_VERSION = "1.18.33"
HELLO_TEXT = "hello from the real opencode test\n"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
OFFLINE_ENV = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1",
    # OpenCode runs `npm install @opencode-ai/plugin` in its config dir at start: offline, it fails at once.
    "npm_config_offline": "true",
    "npm_config_update_notifier": "false",
    "npm_config_audit": "false",
    "npm_config_fund": "false",
}


class NpmMissing(RuntimeError):
    """npm is not on PATH, so opencode-ai cannot be installed."""


def opencode_version() -> str:
    return os.environ.get("OPENCODE_VERSION", "").strip() or DEFAULT_OPENCODE_VERSION


def install_dir(version: str) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "opencode-session-layer" / f"opencode-{version}"


def _candidates(prefix: Path) -> list[Path]:
    """The wrapper's linked binary first, then the platform packages (in case install scripts did not run)."""
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine())
    system = platform.system().lower()
    modules = prefix / "node_modules"
    found = [modules / "opencode-ai" / "bin" / "opencode.exe"]
    for variant in ("", "-baseline", "-musl", "-baseline-musl"):
        found.append(modules / f"opencode-{system}-{arch}{variant}" / "bin" / "opencode")
    return found


def _runnable(binary: Path, version: str) -> bool:
    if not os.access(binary, os.X_OK):
        return False
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def find_opencode(version: str) -> Path | None:
    return next((b for b in _candidates(install_dir(version)) if _runnable(b, version)), None)


def install_opencode(version: str | None = None) -> Path:
    """The `opencode` binary of `version`, installed with npm if the cache does not have it yet."""
    version = version or opencode_version()
    if (binary := find_opencode(version)) is not None:
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise NpmMissing(f"npm is not on PATH: cannot install opencode-ai@{version}")
    prefix = install_dir(version)
    prefix.mkdir(parents=True, exist_ok=True)
    with (prefix.parent / f".opencode-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be installing the same version
        if (binary := find_opencode(version)) is not None:
            return binary
        command = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-package-lock"]
        command += ["--no-save", "--loglevel=error", f"opencode-ai@{version}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` failed ({result.returncode}):\n{result.stderr[-3000:]}")
        if (binary := find_opencode(version)) is None:
            raise RuntimeError(f"no runnable opencode {version} under {prefix}/node_modules after npm install")
        return binary


def opencode_config(model_url: str, price: dict[str, float] | None = None) -> dict[str, object]:
    """opencode.json: the scripted model as provider `fake`, model `fake-model`; no prompts for permission.

    `price`: the model's price per million tokens (`input`, `output`, `cache_read`, `cache_write`), from which
    OpenCode computes each assistant message's `cost`; without it every cost is 0.
    """
    model: dict[str, object] = {
        "name": "Fake Model",
        "tool_call": True,
        "reasoning": False,
        "limit": {"context": 128000, "output": 4096},
    }
    if price is not None:
        model["cost"] = price
    provider = {
        "npm": "@ai-sdk/openai-compatible",  # bundled in the binary: nothing is downloaded
        "name": "Scripted test model",
        "options": {"baseURL": model_url, "apiKey": "sk-test-not-a-secret"},
        "models": {"fake-model": model},
    }
    return {
        "$schema": "https://opencode.ai/config.json",
        "model": "fake/fake-model",
        "small_model": "fake/fake-model",
        "enabled_providers": ["fake"],
        "autoupdate": False,
        "share": "disabled",
        "lsp": False,
        "formatter": False,
        "permission": {"*": "allow"},
        "provider": {"fake": provider},
    }


def make_workdir(path: Path, model_url: str, env: dict[str, str], price: dict[str, float] | None = None) -> Path:
    """The project directory OpenCode serves: a git repository with opencode.json and hello.txt."""
    path.mkdir(parents=True)
    (path / "opencode.json").write_text(json.dumps(opencode_config(model_url, price), indent=2) + "\n")
    (path / "hello.txt").write_text(HELLO_TEXT)
    if shutil.which("git"):
        ident = ["-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false"]
        for args in (["init", "-q"], ["add", "-A"], [*ident, "commit", "-qm", "init"]):
            subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True, timeout=60)
    return path


@dataclass
class OpenCodeServer:
    url: str
    version: str
    workdir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    starts: int = 1  # 2 after one restart_opencode()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class RealOpenCode:
    """A running server and the scripted model behind it (whose `requests` list every call it answered)."""

    server: OpenCodeServer
    model: ScriptedModel

    @property
    def url(self) -> str:
        return self.server.url


def _healthy(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"{url}/global/health", timeout=2) as resp:
            body = json.loads(resp.read())
            return body if isinstance(body, dict) else None
    except (OSError, ValueError):
        return None


@contextmanager
def run_opencode(
    binary: Path, root: Path, model_url: str, *, version: str, price: dict[str, float] | None = None
) -> Iterator[OpenCodeServer]:
    """`opencode serve` on a free loopback port, its state under `root`; stopped with its whole process group."""
    home, xdg = root / "home", root / "xdg"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCODE")}
    env |= {"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"} | OFFLINE_ENV
    for name in ("config", "data", "cache", "state"):
        (xdg / name).mkdir(parents=True)
        env[f"XDG_{name.upper()}_HOME"] = str(xdg / name)
    home.mkdir(parents=True)
    workdir = make_workdir(root / "project", model_url, env, price)
    port = free_port()
    command = [str(binary), "serve", "--hostname", "127.0.0.1", "--port", str(port), "--print-logs"]
    command += ["--log-level", "INFO"]
    log_path = root / "opencode.log"
    log_path.write_bytes(b"")
    server = OpenCodeServer(
        f"http://127.0.0.1:{port}", version, workdir, log_path, _spawn(command, env, workdir, log_path)
    )
    server.command, server.env = command, env
    try:
        _wait_healthy(server)
        yield server
    finally:
        stop_process_group(server.process)


def restart_opencode(server: OpenCodeServer, *, sig: signal.Signals = signal.SIGTERM) -> None:
    """Stop the server's process group (`sig` first, SIGKILL if it lingers) and start it again on the same port
    with the same HOME, XDG and work directories: its session database survives, runs in flight do not."""
    stop_process_group(server.process, first=sig)
    server.process = _spawn(server.command, server.env, server.workdir, server.log_path)
    server.starts += 1
    _wait_healthy(server)


def _spawn(command: list[str], env: dict[str, str], workdir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the tools it spawns are stopped with it
        )


def _wait_healthy(server: OpenCodeServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while (health := _healthy(server.url)) is None:
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"opencode serve did not come up on {server.url}:\n{server.log_tail()}")
        time.sleep(0.1)
    if health.get("version") != server.version:
        raise RuntimeError(f"opencode serve reports version {health.get('version')!r}, expected {server.version}")


def stop_process_group(process: subprocess.Popen[bytes], *, first: signal.Signals = signal.SIGTERM) -> None:
    """`first` (SIGTERM) to the group `process` leads, SIGKILL after STOP_TIMEOUT_S; then reap it."""
    for sig in dict.fromkeys((first, signal.SIGKILL)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            continue
        with contextlib.suppress(ProcessLookupError):  # the leader is gone; its children may not be
            os.killpg(process.pid, signal.SIGKILL)
        break
    process.wait()


def main() -> None:
    """`python -m tests.realopencode.harness`: install the pinned (or OPENCODE_VERSION) opencode-ai, print where."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.realopencode.harness", description=main.__doc__)
    parser.add_argument("--version", default=opencode_version(), help="default: OPENCODE_VERSION or the pinned one")
    args = parser.parse_args()
    started = time.monotonic()
    binary = install_opencode(args.version)
    print(f"opencode {args.version} at {binary} ({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
