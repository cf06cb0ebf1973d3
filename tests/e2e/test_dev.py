"""`opencode-sessions dev` as a user runs it: a fresh environment, the CLI from a "second terminal", Ctrl-C.

Each test starts the real command (embedded Redis and PostgreSQL, simulator, pollers, gateway), drives it with
the other CLI commands using only the `export KEY=VALUE` lines it printed, then interrupts it and checks that no process
it started is left and that its temporary data is gone (or kept, with --data-dir).
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from tests.dev_stack import (
    PERSISTENT_CACHE,
    Dev,
    assert_clean_exit,
    descendants,
    fresh_env,
    run_cli,
    wait_history,
    world_traversable_dir,
)


def test_dev_runs_the_system_and_ctrl_c_leaves_nothing_behind():
    with world_traversable_dir("opencode-dev-test-tmp-") as tmpdir:
        env = fresh_env(tmpdir)
        dev = Dev(["--sim-speed", "5"], env)
        try:
            urls = dev.environment()
            shell = {**env, **urls}  # the second terminal, after `export` of the printed lines
            assert urls["GATEWAY_URL"].startswith("http://127.0.0.1:")

            code, out, err = run_cli("enqueue", "--type", "ask", "--ticket", "T-dev", "--prompt", "TOOL go", env=shell)
            assert code == 0, err
            sid = out.strip()
            code, out, err = run_cli("watch", sid, env=shell)
            assert code == 0, err
            assert "  assistant tool bash [completed] echo hello" in out.splitlines()
            assert out.splitlines()[-1] == "status: completed"

            (archived,) = wait_history("T-dev", 1, shell)
            assert archived["sessionId"] == sid and archived["status"] == "completed"

            code, out, err = run_cli("status", "--json", env=shell)
            assert code == 0, err
            replicas = {p["replicaId"] for p in json.loads(out)["pollers"] if p["alive"]}
            assert replicas == {"dev-poller-1", "dev-poller-2"}

            before = descendants(dev.proc.pid)
            assert len(before) >= 6, before  # redis, postgres (+ its workers), simulator, 2 pollers, gateway
            stderr = dev.stderr()
            for component in ("redis", "postgres", "opencode", "poller-1", "poller-2", "gateway"):
                assert f"dev: {component:<10} up  " in stderr
            assert "GATEWAY_AUTH=off" in stderr
        except BaseException:
            dev.kill()
            raise
        assert_clean_exit(dev, before, signal.SIGINT)
        assert sorted(p.name for p in tmpdir.iterdir() if not p.name.startswith(PERSISTENT_CACHE)) == []


def test_dev_demo_sessions_are_archived_and_data_dir_keeps_them():
    with world_traversable_dir("opencode-dev-test-tmp-") as tmpdir, world_traversable_dir("opencode-dev-data-") as data:
        env = fresh_env(tmpdir)
        dev = Dev(["--demo", "--json", "--port", "0", "--data-dir", str(data), "--sim-speed", "5"], env)
        try:
            ready = dev.event("ready")
            shell = {**env, **ready["env"]}
            assert set(ready["pids"]) == {"redis", "postgres", "opencode", "poller-1", "poller-2", "gateway"}
            demo = dev.event("demo")["sessions"]
            assert [d["prompt"].split()[0] for d in demo] == ["ECHO", "TOOL", "REJECT"]
            archived = {s["sessionId"]: s["status"] for s in wait_history("demo", 3, shell)}
            assert archived == {
                demo[0]["sessionId"]: "completed",
                demo[1]["sessionId"]: "completed",
                demo[2]["sessionId"]: "error",
            }
            before = descendants(dev.proc.pid)
        except BaseException:
            dev.kill()
            raise
        assert_clean_exit(dev, before, signal.SIGTERM)
        assert (data / "postgres" / "pgdata" / "PG_VERSION").is_file()
        assert (data / "redis").is_dir()

        # A restart on the same data dir: the history is still there.
        dev = Dev(["--json", "--port", "0", "--data-dir", str(data)], env)
        try:
            shell = {**env, **dev.event("ready")["env"]}
            code, out, err = run_cli("history", "--ticket", "demo", "--json", env=shell)
            assert code == 0, err
            assert {s["sessionId"] for s in json.loads(out)["sessions"]} == set(archived)
            before = descendants(dev.proc.pid)
        except BaseException:
            dev.kill()
            raise
        assert_clean_exit(dev, before, signal.SIGINT)
        assert sorted(p.name for p in tmpdir.iterdir() if not p.name.startswith(PERSISTENT_CACHE)) == []


def test_dev_taken_port_and_bad_options_fail_cleanly(tmp_path):
    env = fresh_env(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        code, out, err = run_cli("dev", "--port", str(port), env=env)
    assert (code, out) == (1, "")
    assert f"error: port {port} is already in use" in err
    assert list(tmp_path.iterdir()) == []  # it failed before starting anything
    code, out, err = run_cli("dev", "--env", env=env)
    assert (code, out) == (1, "") and "no `opencode-sessions dev` is running" in err
    code, _, err = run_cli("dev", "--replicas", "0", env=env)
    assert code == 2 and err.startswith("error: Invalid value for '--replicas'")
    code, _, err = run_cli("dev", env={**env, "OPENCODE_URL": "not a url"})
    assert code == 2 and err.startswith("error: OPENCODE_URL='not a url' is invalid")


@pytest.fixture(autouse=True)
def _linux_only():
    if not Path("/proc/self/stat").exists():
        pytest.skip("checks for leftover processes through /proc")


def test_dev_with_two_simulated_servers_runs_sessions_on_each():
    with world_traversable_dir("opencode-dev-test-tmp-") as tmpdir:
        env = fresh_env(tmpdir)
        dev = Dev(["--sim-speed", "5", "--servers", "2"], env)
        try:
            urls = dev.environment(extra=("OPENCODE_SERVERS",))
            shell = {**env, **urls}
            servers = dict(pair.split("=", 1) for pair in urls["OPENCODE_SERVERS"].split(","))
            assert list(servers) == ["default", "sim2"]
            assert servers["default"] == urls["OPENCODE_URL"] != servers["sim2"]
            for server in servers:
                code, out, err = run_cli(
                    "enqueue", "--type", "ask", "--ticket", "T-two", "--server", server, "--prompt", "ECHO", env=shell
                )
                assert code == 0, err
            archived = wait_history("T-two", 2, shell)
            assert sorted((s["server"], s["status"]) for s in archived) == [
                ("default", "completed"),
                ("sim2", "completed"),
            ]
            code, out, err = run_cli("status", "--json", env=shell)
            assert code == 0, err
            reported = json.loads(out)["servers"]
            assert [(s["name"], s["url"], s["healthy"]) for s in reported] == [(n, u, True) for n, u in servers.items()]
            code, _, err = run_cli("enqueue", "--type", "ask", "--server", "sim3", "--prompt", "x", env=shell)
            assert code == 2 and "sim3" in err
            before = descendants(dev.proc.pid)
        except BaseException:
            dev.kill()
            raise
        assert_clean_exit(dev, before, signal.SIGINT)
