"""`dev` as a new user meets it in two terminals: export lines, tokens, least privilege, a data dir used twice,
a restart that keeps every URL, a killed dev's leftovers, and an OPENCODE_URL exported from another dev."""

from __future__ import annotations

import json
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis

from shared.dev.supervisor import envfile
from tests.dev_stack import (
    PERSISTENT_CACHE,
    Dev,
    assert_clean_exit,
    descendants,
    env_file_of,
    fresh_env,
    listening_addresses,
    run_cli,
    wait_gone,
    wait_history,
    world_traversable_dir,
)


def left_in(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.iterdir() if not p.name.startswith(PERSISTENT_CACHE))


def test_two_devs_a_data_dir_in_use_a_killed_dev_and_a_restart_that_keeps_the_urls():
    with world_traversable_dir("opencode-dev-test-tmp-") as tmpdir, world_traversable_dir("opencode-dev-data-") as data:
        env = fresh_env(tmpdir)
        first = Dev(["--data-dir", str(data), "--auth", "--port", "0", "--sim-speed", "5"], env)
        second: Dev | None = None
        try:
            urls = first.environment()
            shell = {**env, **urls}

            # The second terminal: `dev --env` prints the same lines as the file dev named.
            code, out, err = run_cli("dev", "--env", "--data-dir", str(data), env=env)
            assert code == 0, err
            assert out == env_file_of(first).read_text() == (data / "dev.env").read_text()
            assert envfile.parse(out).env == urls

            # Tokens: the exported secret mints them; the gateway (auth on) wants one.
            code, token, err = run_cli("token", "--admin", env=shell)
            assert code == 0, err
            code, sid, err = run_cli("enqueue", "--type", "ask", "--prompt", "ECHO hi", env=shell)
            assert code == 0, err
            code, _, err = run_cli("watch", sid.strip(), env=shell)
            assert code == 1 and "wants a token" in err
            code, out, err = run_cli("watch", sid.strip(), env={**shell, "GATEWAY_TOKEN": token.strip()})
            assert code == 0, err
            assert out.splitlines()[-1] == "status: completed"

            # Least privilege: password auth, the gateway on the read-only role, Redis's default user locked.
            with psycopg.connect(urls["DATABASE_URL"], autocommit=True) as conn:
                users = {
                    row[0] for row in conn.execute("SELECT usename FROM pg_stat_activity WHERE usename IS NOT NULL")
                }
                methods = {row[0] for row in conn.execute("SELECT auth_method FROM pg_hba_file_rules")}
            assert "opencode_gateway" in users
            assert methods == {"scram-sha-256"}
            no_password = urls["DATABASE_URL"].replace(urls["DATABASE_URL"].split("@")[0].split(":")[-1], "wrong")
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                psycopg.connect(no_password, connect_timeout=5).close()
            listening = listening_addresses(list(descendants(first.proc.pid)))
            assert len(listening) >= 4 and all(a.startswith("127.0.0.1:") for a in listening), listening
            port = urls["REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=int(port)).ping()
            state = data / "dev-state.json"
            assert stat.S_IMODE(state.stat().st_mode) == stat.S_IMODE((data / "dev.env").stat().st_mode) == 0o600
            admin = json.loads(state.read_text())["credentials"]["redis_admin"]
            with redis.Redis(port=int(port), password=admin) as client:
                clients = client.client_list()
            assert {c["user"] for c in clients} >= {"opencode-gateway", "opencode-poller"}  # each on its own user

            # A second dev on the same data dir: one line naming the first, nothing started.
            code, out, err = run_cli("dev", "--data-dir", str(data), env=env)
            assert (code, out) == (1, "")
            assert err.splitlines() == [
                f"error: --data-dir {data} is in use by another `opencode-sessions dev` (pid {first.proc.pid}):"
                " stop that one first, or choose another directory"
            ]

            # A new dev in a terminal that exported the first one's lines: its own simulator, and it says so.
            second = Dev(["--port", "0"], {**env, **urls})
            other = second.environment()
            assert other["OPENCODE_URL"] != urls["OPENCODE_URL"]
            assert f"is the simulator of another dev (pid {first.proc.pid})" in second.stderr()
            second_run_dir = env_file_of(second).parent

            # SIGKILL leaves its run directory behind; its servers die with it.
            started_by_second = descendants(second.proc.pid)
            second.kill()
            wait_gone(started_by_second)
            assert second_run_dir.is_dir()
            before = descendants(first.proc.pid)
        except BaseException:
            first.kill()
            if second is not None:
                second.kill()
            raise
        assert_clean_exit(first, before, signal.SIGINT)

        # The restart: same data dir, no --port: every URL as before; the killed dev's directory swept.
        again = Dev(["--data-dir", str(data), "--auth"], env)
        try:
            assert again.environment() == urls
            assert f"dev: removed {second_run_dir}, left behind by a dev that was killed" in again.stderr()
            before = descendants(again.proc.pid)
        except BaseException:
            again.kill()
            raise
        assert_clean_exit(again, before, signal.SIGINT)
        assert left_in(tmpdir) == []


@pytest.fixture(autouse=True)
def _linux_only():
    if not Path("/proc/self/stat").exists():
        pytest.skip("checks for leftover processes through /proc")


def test_a_session_running_when_dev_stops_ends_with_its_messages_after_the_restart():
    with world_traversable_dir("opencode-dev-test-tmp-") as tmpdir, world_traversable_dir("opencode-dev-data-") as data:
        env = fresh_env(tmpdir)
        dev = Dev(["--data-dir", str(data), "--port", "0"], env)
        try:
            shell = {**env, **dev.environment()}
            code, sid, err = run_cli(
                "enqueue", "--type", "ask", "--ticket", "T-stop", "--prompt", "SLOW TOOL wait for me", env=shell
            )
            assert code == 0, err
            sid = sid.strip()
            wait_until(lambda: running_tool(sid, shell), what="the slow tool call running")
            before = descendants(dev.proc.pid)
        except BaseException:
            dev.kill()
            raise
        assert_clean_exit(dev, before, signal.SIGINT)

        dev = Dev(["--data-dir", str(data)], env)
        try:
            shell = {**env, **dev.environment()}
            (archived,) = wait_history("T-stop", 1, shell)
            assert archived["sessionId"] == sid
            assert archived["status"] in ("error", "cancelled")  # its run was cut by the stop, as OpenCode's would be
            code, out, err = run_cli("show", sid, "--json", env=shell)
            assert code == 0, err
            shown = json.loads(out)
            parts = [p for m in shown["messages"] for p in m["parts"]]
            assert any(p.get("text") == "SLOW TOOL wait for me" for p in parts)  # the prompt
            assert any(p["type"] == "tool" and p["tool"] == "bash" for p in parts)  # and the tool call
            before = descendants(dev.proc.pid)
        except BaseException:
            dev.kill()
            raise
        assert_clean_exit(dev, before, signal.SIGINT)


def running_tool(sid: str, shell: dict[str, str]) -> bool:
    code, out, err = run_cli("show", sid, "--json", env=shell)
    assert code == 0, err
    return any(p["type"] == "tool" for m in json.loads(out)["messages"] for p in m["parts"])


def wait_until(check: Callable[[], bool], *, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
